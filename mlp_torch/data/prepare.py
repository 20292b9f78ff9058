"""From raw arrays to training tensors: the task and its targets, the splits and
cross-validation folds, the scaling of inputs, the unit range of regression targets."""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch import Tensor

from mlp_torch.data.base import MAX_AUTO_CLASSES, UNIT_HIGH, UNIT_LOW, DataError


def infer_task(y: np.ndarray) -> Literal["classification", "regression"]:
    """The task for ``task="auto"``: classification for integer-valued or text targets with at
    most ``MAX_AUTO_CLASSES`` distinct values, regression otherwise (also for ``(n, k>1)``)."""
    if y.ndim == 2 and y.shape[1] > 1:
        return "regression"
    values = np.unique(y)
    integer_valued = y.dtype.kind == "U" or bool(np.all(values == np.round(values)))
    return "classification" if integer_valued and len(values) <= MAX_AUTO_CLASSES else "regression"


def encode_targets(y: np.ndarray, task: str) -> tuple[str, np.ndarray, list | None]:
    """Resolve ``task`` ("auto" | "classification" | "regression") for raw targets ``y``.

    Returns:
        ``(task, targets, classes)``: for classification the labels ``(n,)`` int64 indexing
        ``classes`` (the sorted distinct values as python int or str); for regression the
        targets ``(n, k)`` float64 and ``None``.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    resolved = infer_task(y) if task == "auto" else task
    is_text = y.dtype.kind == "U"
    if resolved == "regression":
        if is_text:
            why = (
                f" (task='auto' chose regression for {len(np.unique(y))} distinct values, "
                f"more than {MAX_AUTO_CLASSES})"
                if task == "auto"
                else ""
            )
            raise DataError(
                f"the target is text (e.g. {str(y[0])!r}) and regression needs numbers{why}; "
                "pass task='classification' or choose a numeric target"
            )
        return resolved, y.astype(np.float64).reshape(len(y), -1), None
    if y.ndim == 2:
        raise DataError(
            f"targets of shape {y.shape} are not class labels (one per example); use task='regression'"
        )
    if not is_text and not np.all(y == np.round(y)):
        raise DataError(
            f"task='classification' needs integer or text labels, but the target has values "
            f"such as {y[y != np.round(y)][0]}; use task='regression'"
        )
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"the target has a single class ({classes[0].item()!r} for all {len(y)} examples); "
            "classification needs at least two: check the target column, or use task='regression'"
        )
    return resolved, labels, [str(c) if is_text else int(c) for c in classes]


def split_indices(
    n: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
    cv_folds: int = 0,
    cv_fold: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/val/test indices of ``n`` examples, stratified by ``labels`` ``(n,)`` (any
    class values; the messages name them) if given.

    The val and test splits get ``round(fraction * n)`` examples (at least 1 for a nonzero
    fraction), the training split the rest. The same arguments give the same split, always.

    Cross-validation: with ``cv_folds`` = k >= 2 the non-test examples are cut into k (stratified)
    folds by ``seed``; fold ``cv_fold`` is the val split and the other k - 1 the training split
    (``val_fraction`` is not used). The test split does not depend on ``cv_folds``, so k runs with
    ``cv_fold`` = 0 .. k-1 validate on every non-test example exactly once and never see the test.
    """
    if cv_folds:
        val_fraction = (1 - test_fraction) / cv_folds  # for the size checks below
    n_val, n_test = (0 if f == 0 else max(1, round(f * n)) for f in (val_fraction, test_fraction))
    n_train = n - n_val - n_test
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    n_classes = 1 if labels is None else len(np.unique(labels))
    for split, size in sizes.items():
        if size < n_classes and (size > 0 or split == "train"):
            raise DataError(
                f"{n} examples are too few for val_fraction={val_fraction} and "
                f"test_fraction={test_fraction}: the {split} split gets {size}, it needs at "
                f"least {n_classes}; add examples or change the fractions"
            )
    if labels is not None:
        n_parts = sum(size > 0 for size in sizes.values())
        values, counts = np.unique(labels, return_counts=True)
        if counts.min() < n_parts:
            raise DataError(
                f"class {values[counts.argmin()].item()!r} has only {counts.min()} example(s), "
                f"too few to stratify into {n_parts} splits (needs {n_parts}); add examples of "
                "it, drop it, or set val_fraction=0"
            )
    try:
        rest, test = _split(np.arange(n), n_test, seed, labels)
        rest_labels = None if labels is None else labels[rest]
        if cv_folds:
            train, val = _fold(rest, cv_folds, cv_fold, seed, rest_labels)
        else:
            train, val = _split(rest, n_val, seed, rest_labels)
    except ValueError as err:
        raise DataError(f"cannot split it as asked ({err}); add examples or change the fractions") from None
    return train, val, test


def _split(
    indices: np.ndarray, size: int, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` split into (rest, part) with ``size`` examples in part."""
    if size == 0:
        return indices, indices[:0]
    return train_test_split(indices, test_size=size, random_state=seed, stratify=labels)


def _fold(
    indices: np.ndarray, k: int, i: int, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` split into (the other folds, fold ``i``) of ``k`` seeded folds, stratified
    by ``labels`` if given."""
    order = np.argsort(indices)  # the folds depend on the set of indices, not on their order
    indices = indices[order]
    labels = None if labels is None else labels[order]
    folds = StratifiedKFold if labels is not None else KFold
    rest, part = list(folds(k, shuffle=True, random_state=seed).split(indices, labels))[i]
    return indices[rest], indices[part]


def scaling_stats(x_train: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(offset, scale)`` of ``x_train`` ``(n, d)``: ``(min, max - min)`` for
    ``"minmax"``, ``(mean, population std)`` for ``"standard"``; constant columns get scale 1."""
    constant = np.ptp(x_train, axis=0) == 0  # (d,)
    if scaling == "minmax":
        offset, scale = x_train.min(axis=0), np.ptp(x_train, axis=0)
    else:
        offset, scale = x_train.mean(axis=0), x_train.std(axis=0)
    return offset, np.where(constant, 1.0, scale)


def scale_inputs(x, offset, scale):
    """``(x - offset) / scale``, column by column; for tensors and arrays alike."""
    return (x - offset) / scale


def to_unit_range(y: Tensor, low: Tensor | Sequence[float], high: Tensor | Sequence[float]):
    """Map targets ``y`` ``(n, k)`` from ``[low, high]`` (per output) onto ``[0.1, 0.9]``:

    ``y01 = 0.1 + 0.8 (y - low) / (high - low)``; a constant output (``high == low``) uses a
    span of 1, so it maps to 0.1.
    """
    low, span = _low_span(y, low, high)
    return UNIT_LOW + (UNIT_HIGH - UNIT_LOW) * (y - low) / span


def from_unit_range(y01: Tensor, low: Tensor | Sequence[float], high: Tensor | Sequence[float]):
    """The inverse of :func:`to_unit_range`: ``y = low + (y01 - 0.1) (high - low) / 0.8``."""
    low, span = _low_span(y01, low, high)
    return low + (y01 - UNIT_LOW) / (UNIT_HIGH - UNIT_LOW) * span


def _low_span(y: Tensor, low, high) -> tuple[Tensor, Tensor]:
    """``low`` and ``high - low`` (1 where constant) as tensors of ``y``'s dtype and device."""
    low = torch.as_tensor(low, dtype=y.dtype, device=y.device)
    high = torch.as_tensor(high, dtype=y.dtype, device=y.device)
    return low, torch.where(high > low, high - low, torch.ones_like(high))
