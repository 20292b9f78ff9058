"""Data for the sigmoid MLP: built-in, generated and user data sets as one LightningDataModule.

Everything is local (no downloads): scikit-learn's bundled sets (digits, iris, wine,
breast_cancer), two generated sets (xor, sine) and the user's own .csv or .npz files.

Conventions, fixed here and tested in tests/test_data.py:

* Inputs are scaled column by column, ``x' = (x - offset) / scale``, with statistics of the
  TRAINING split only: ``scaling="minmax"`` (default) maps the training range onto [0, 1]
  (offset = min, scale = max - min); ``"standard"`` standardizes (offset = mean, scale =
  population std). A constant column gets scale 1. Min-max is the default because
  standardizing pixel-like columns that are almost always 0 (digits' border pixels) turns their
  rare non-zero values into inputs of 10-40, which the sigmoid units then fit to noise: on digits'
  validation splits (seeds 0-2) the median accuracy rose from 97.5% to 98.3% with min-max.
* Classification targets are one-hot floats ``(n, n_classes)``; the integer labels sit beside
  them for metrics.
* Regression targets are ``(n, n_outputs)`` floats, mapped per output from the training range
  ``[low, high]`` onto ``[0.1, 0.9]``, inside the sigmoid's open range ``(0, 1)``; val and test
  use the same map, so they may fall slightly outside.
* Each split is one batch: the training loop makes many updates inside one Lightning training
  step per epoch, shuffling with :func:`epoch_permutation` itself.
"""

import csv
import errno
import math
import os
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch import Tensor

from mlp_torch.limits import check_fits_in_memory, format_bytes

BUILTIN_LOADERS: dict[str, Callable] = {
    "digits": load_digits,
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
}
GENERATED_TASKS = {"xor": "classification", "sine": "regression"}
FILE_SUFFIXES = (".csv", ".npz")
TASKS = ("auto", "classification", "regression")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCALINGS = ("minmax", "standard")
STREAMING = ("auto", "on", "off")
DEFAULT_STREAM_BUDGET_MB = 256  # streaming="on" without a budget, off CUDA

MAX_AUTO_CLASSES = 50  # task="auto": at most this many distinct integer/text targets -> classes
MIN_GENERATED_SAMPLES = 4  # one point per XOR corner
UNIT_LOW, UNIT_HIGH = 0.1, 0.9  # regression targets are mapped into this part of (0, 1)
FRACTION_RULE = "val_fraction and test_fraction must be in [0, 1) with val_fraction + test_fraction < 1"


class DataError(ValueError):
    """A data set that cannot be used as asked; the message says which and what to do."""


# ---------------------------------------------------------------------------------------------
# Generated data sets


def make_xor(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: points at the corners of the unit square, label ``x1 XOR x2``.

    The corners get ``n_samples // 4`` points each (the first ``n_samples % 4`` corners one
    more), in random order, with gaussian noise of std ``noise`` added to the inputs.

    Returns:
        ``x`` ``(n_samples, 2)`` float64 and ``labels`` ``(n_samples,)`` int64 in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2)
    corner_labels = np.array([0, 1, 1, 0])  # (4,)
    corner = rng.permutation(np.arange(n_samples) % 4)  # (n,)
    x = corners[corner] + noise * rng.standard_normal((n_samples, 2))  # (n, 2)
    return x, corner_labels[corner]


def make_sine(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One period of a sine: ``x ~ U[-pi, pi]``, ``y = sin(x) + noise * N(0, 1)``.

    Returns:
        ``x`` ``(n_samples, 1)`` and ``y`` ``(n_samples, 1)``, both float64.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-math.pi, math.pi, size=(n_samples, 1))  # (n, 1)
    y = np.sin(x) + noise * rng.standard_normal((n_samples, 1))  # (n, 1)
    return x, y


# ---------------------------------------------------------------------------------------------
# User files. Their messages leave out the file name: MLPDataModule puts it in front. They never
# quote the file's content (a header, a cell): a path can come from a checkpoint, and an error
# must not print another file's first line. They say where instead: the column's number, the line.


def read_csv(path: str | Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV file with a header row: column ``target`` is the target, the rest inputs.

    Returns:
        ``x`` ``(n, d)`` float64 and the raw targets ``(n,)``: int64 if every value is an
        integer that fits in 64 bits (read exactly, not through a float), float64 if every value
        is a number, else text (``str``; integers beyond 64 bits are kept as their digits).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            rows = [(reader.line_num, row) for row in reader if row]  # blank lines skipped
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise DataError(f"cannot be read as UTF-8 CSV text ({why})") from None
    if not rows:
        raise DataError("is empty; it needs a header row naming the columns, then the data")
    header = [name.strip() for name in rows[0][1]]
    if target not in header:
        raise DataError(
            f"has no column {target!r} among the {len(header)} columns of its header row (line 1); "
            "pass the name of the target column as target"
        )
    for j, name in enumerate(header):
        if header.index(name) != j:
            raise DataError(
                f"its header row names two columns alike (columns {header.index(name) + 1} and {j + 1}); "
                "give every column its own name"
            )
    if len(header) == 1:
        raise DataError(f"has no input columns besides the target {target!r}")
    if len(rows) == 1:
        raise DataError("has a header row but no data rows")
    t = header.index(target)
    columns = [j + 1 for j in range(len(header)) if j != t]  # each input's column number, from 1
    x = np.empty((len(rows) - 1, len(columns)))  # (n, d)
    targets = []
    for i, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(
                f"line {line} has {len(row)} fields but the header has {len(header)}; fix that row"
            )
        for j, (column, text) in enumerate(zip(columns, row[:t] + row[t + 1 :], strict=True)):
            x[i, j] = _parse_input(text, column, len(header), line)
        if not row[t].strip():
            raise DataError(f"target column {target!r} is empty on line {line}; fill or drop it")
        targets.append(row[t].strip())
    return x, _parse_targets(targets, target, [line for line, _ in rows[1:]])


def _parse_targets(texts: list[str], target: str, lines: list[int]) -> np.ndarray:
    """A CSV file's target column: exact integers, else numbers, else text."""
    try:
        integers = [int(text) for text in texts]
    except ValueError:
        integers = None
    if integers is not None:
        if all(-(2**63) <= v < 2**63 for v in integers):
            return np.array(integers, dtype=np.int64)
        return np.array(texts)  # beyond 64 bits: class labels by their digits, never rounded
    try:
        y = np.array([float(text) for text in texts])
    except ValueError:
        return np.array(texts)  # text labels
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise DataError(
            f"target column {target!r} has a non-finite value on line {lines[bad[0]]}; "
            "fill in or drop that row"
        )
    return y


def _parse_input(text: str, column: int, n_columns: int, line: int) -> float:
    """One input cell of a CSV file as a finite float."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"column {column} of {n_columns} is not numeric on line {line}; convert it or drop it"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f"column {column} of {n_columns} has a non-finite value on line {line}; fill in or drop that row"
        )
    return value


def read_npz(path: str | Path, target: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Read a NumPy ``.npz`` archive with inputs ``x`` ``(n, d)`` and targets ``target``.

    Returns:
        ``x`` ``(n, d)`` float64 and the raw targets, ``(n,)`` or ``(n, k)``, numbers or text.
    """
    arrays = _read_arrays(path)
    missing = [name for name in ("x", target) if name not in arrays]
    if missing:
        raise DataError(
            f"has no array {missing[0]!r}; available arrays: {', '.join(arrays)}; "
            "save the inputs as 'x' and pass the targets' name as target"
        )
    x, y = arrays["x"], arrays[target]
    if x.ndim != 2 or x.shape[1] == 0 or x.dtype.kind not in "biuf":
        raise DataError(
            f"array 'x' must hold numbers in shape (n, d) with d >= 1, "
            f"got dtype {x.dtype} and shape {x.shape}"
        )
    if len(x) == 0:
        raise DataError("has no examples: its array 'x' has 0 rows")
    if y.ndim not in (1, 2) or len(y) != len(x) or y.dtype.kind not in "biufU":
        raise DataError(
            f"array {target!r} must hold numbers or text in shape ({len(x)},) or ({len(x)}, k), "
            f"got dtype {y.dtype} and shape {y.shape}"
        )
    for name, values in (("x", x), (target, y)):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            row = np.argwhere(~np.isfinite(values))[0][0]
            raise DataError(f"array {name!r} has a non-finite value in row {row}; fill in or drop that row")
    return x.astype(np.float64), (y.astype(np.int64) if y.dtype.kind == "b" else y)


SPLIT_ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # MNIST's common .npz layout


def read_npz_splits(path: str | Path) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Read a ``.npz`` archive in MNIST's common layout, ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` (inputs of any shape per example, flattened; class labels or targets), keeping the
    file's own test split; ``None`` if the archive does not have these four arrays.

    Returns:
        ``x`` ``(n_train + n_test, d)`` float64, the raw targets, training rows first, and
        ``n_test``: the last ``n_test`` rows are the file's test split.
    """
    arrays = _read_arrays(path)
    if not all(name in arrays for name in SPLIT_ARRAYS):
        return None
    xs, ys = [], []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or x.dtype.kind not in "biuf" or 0 in x.shape:
            raise DataError(
                f"array 'x_{split}' must hold numbers, one example per row, got {x.dtype} {x.shape}"
            )
        if y.ndim not in (1, 2) or len(y) != len(x) or y.dtype.kind not in "biufU":
            raise DataError(
                f"array 'y_{split}' must hold numbers or text in shape ({len(x)},) or ({len(x)}, k), "
                f"got dtype {y.dtype} and shape {y.shape}"
            )
        for name, values in ((f"x_{split}", x), (f"y_{split}", y)):
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                row = np.argwhere(~np.isfinite(values))[0][0]
                raise DataError(
                    f"array {name!r} has a non-finite value in row {row}; fill in or drop that example"
                )
        xs.append(x.reshape(len(x), -1))  # (n, d): images flattened
        ys.append(y)
    train, test = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train != test:
        raise DataError(
            f"training examples ('x_train') have shape {train} but test examples ('x_test') {test}; "
            "they must match"
        )
    if ys[0].shape[1:] != ys[1].shape[1:]:
        raise DataError(
            f"training targets ('y_train') have shape {ys[0].shape[1:]} per example but test targets "
            f"('y_test') {ys[1].shape[1:]}; they must match"
        )
    if (ys[0].dtype.kind == "U") != (ys[1].dtype.kind == "U"):
        kinds = ["text" if t.dtype.kind == "U" else "numbers" for t in ys]
        raise DataError(
            f"'y_train' holds {kinds[0]} but 'y_test' {kinds[1]}; give both the same kind of labels"
        )
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x.astype(np.float64), (y.astype(np.int64) if y.dtype.kind == "b" else y), len(xs[1])


def npz_sizes(path: str | Path) -> dict[str, int]:
    """The bytes each array of a .npz archive claims in its header, read without loading it."""
    sizes = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = header(f)
            sizes[name.removesuffix(".npy")] = math.prod(shape) * dtype.itemsize
    return sizes


def _read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a .npz archive by name; refused before loading if they cannot fit in memory."""
    try:
        sizes = npz_sizes(path) if zipfile.is_zipfile(path) else {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot be read as a NumPy .npz archive ({err}); write it with numpy.savez"
        ) from None
    try:
        check_fits_in_memory(
            3 * sum(sizes.values()),  # the arrays, their float64 copy and the tensors
            f"its arrays ({', '.join(f'{k}: {format_bytes(v)}' for k, v in sizes.items())})",
            "is the file corrupt? a data set must fit in memory",
        )
    except ValueError as err:
        raise DataError(str(err)) from None
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.ndarray):
            raise ValueError("it holds a single .npy array, not named arrays")
        with archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot be read as a NumPy .npz archive ({err}); write it with numpy.savez"
        ) from None


# ---------------------------------------------------------------------------------------------
# Targets, splits and scaling


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


def epoch_permutation(n: int, seed: int, epoch: int, device=None) -> Tensor:
    """The shuffle order of epoch ``epoch``: a permutation of ``range(n)`` that depends on
    ``(seed, epoch)`` only, drawn on the CPU so that every device (and a resumed run) sees the
    same order."""
    if n < 0:
        raise ValueError(f"n={n} is out of range: n must be >= 0")
    generator = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + epoch) % 2**63)
    order = torch.randperm(n, generator=generator)  # (n,)
    return order if device is None else order.to(device)


# ---------------------------------------------------------------------------------------------
# The DataModule


class Batch(NamedTuple):
    """One batch: a whole split."""

    x: Tensor  # (n, n_features)
    y: Tensor  # (n, n_outputs)


class _WholeSplit:
    """An iterable of one batch, the whole split.

    Not a ``DataLoader``: Lightning leaves it alone, so under DDP it injects no
    ``DistributedSampler`` (which would pad the split to a multiple of the ranks, repeating
    examples) and every rank gets the very tensors, on their device; the model takes each rank's
    share by index (see :mod:`mlp_torch.distributed`). Not a list either: Lightning would read a
    list as several loaders."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


def _one_batch_loader(x: Tensor, y: Tensor) -> _WholeSplit | list:
    """An iterable yielding ``Batch(x, y)`` once, or ``[]`` for an empty split."""
    return _WholeSplit(Batch(x, y)) if len(x) else []


@dataclass(frozen=True)
class _Splits:
    """The loaded data: train/val/test tensors and what is needed to read them."""

    task: str
    classes: list | None
    target_low: list[float] | None
    target_high: list[float] | None
    x_offset: Tensor  # (n_features,)
    x_scale: Tensor  # (n_features,)
    x_train: Tensor  # (n_train, n_features)
    y_train: Tensor  # (n_train, n_outputs)
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    labels_train: Tensor | None  # (n_train,) long
    labels_val: Tensor | None
    labels_test: Tensor | None
    rows_train: Tensor  # (n_train,) long: each example's row in the original data set
    rows_val: Tensor
    rows_test: Tensor

    def to(self, device: torch.device) -> "_Splits":
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, Tensor)})


def _loaded(name: str, doc: str) -> property:
    """A read-only attribute of the loaded data; reading it loads the data (once)."""
    return property(lambda self: getattr(self._load(), name), doc=doc)


class MLPDataModule(LightningDataModule):
    """Train/val/test splits of one data set, each served as a single full batch.

    Args:
        dataset: "digits", "iris", "wine", "breast_cancer" (scikit-learn's bundled sets),
            "xor", "sine" (generated), or a path to a .csv or .npz file.
        target: .csv: the name of the target column (required; every other column is an
            input and must be numeric). .npz: the name of the targets' array (default "y");
            the inputs are the array "x". A .npz in MNIST's layout (``x_train``, ``y_train``,
            ``x_test``, ``y_test``, inputs of any shape flattened) needs no target: its own
            test split is kept (``test_fraction`` is not used) and the val split is taken from
            its training examples. Must be None for the named sets.
        task: "auto" (default): integer-valued or text targets with at most 50 distinct
            values are classification, the rest regression. The named sets have a fixed task
            (sine: regression, the others classification); naming a different one is an error.
        val_fraction: the share of examples in the validation split; 0 means none (then
            ``val_dataloader()`` returns ``[]``).
        test_fraction: the share of examples in the test split; 0 means none.
        seed: the seed of the split, of the generated sets, and the shuffle seed to pass to
            :func:`epoch_permutation`; in [0, 2**32).
        n_samples: the number of examples of "xor" and "sine" (at least 4).
        noise: the std of the gaussian noise of "xor" (on the inputs) and "sine" (on the
            target); >= 0.
        dtype: the float type of all input and target tensors.
        scaling: "minmax" (default, training range onto [0, 1]) or "standard" (zero mean, unit
            std), both with training-split statistics only.
        cv_folds: cross-validation: k >= 2 cuts the non-test examples into k stratified folds,
            one of them the val split and the rest the training split (``val_fraction`` is then
            not used); 0 (default): no folds. The test split is the same either way (see
            ``scripts/cv.py``).
        cv_fold: with ``cv_folds`` = k, which fold (0 .. k-1) is the val split.
        streaming: "auto" (default): the training split stays in host memory and goes to the
            device in chunks when it is larger than the memory budget; "on", "off": always,
            never. The update sequence is the same either way.
        memory_budget_mb: device memory for the training split, in MiB; null: half the free
            memory of a CUDA device (no limit on the CPU).

    Everything below loads the data on first use, so it can be read right after construction
    (LightningCLI links ``n_features`` and ``n_outputs`` into the model that way):
    ``n_features``, ``n_outputs``, ``task``, ``classes``, ``target_low``, ``target_high``,
    ``x_offset``, ``x_scale``, ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``,
    ``y_test``, ``labels_train``, ``labels_val``, ``labels_test``, ``rows_train``, ``rows_val``,
    ``rows_test``. ``setup()`` moves the tensors to the trainer's device, once.
    """

    def __init__(
        self,
        dataset: str = "digits",
        target: str | None = None,
        task: Literal["auto", "classification", "regression"] = "auto",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        n_samples: int = 400,
        noise: float = 0.1,
        dtype: Literal["float32", "float64"] = "float32",
        scaling: Literal["minmax", "standard"] = "minmax",
        cv_folds: int = 0,
        cv_fold: int = 0,
        streaming: Literal["auto", "on", "off"] = "auto",
        memory_budget_mb: float | None = None,
    ):
        super().__init__()
        _check_arguments(dataset, target, task, val_fraction, test_fraction, seed, n_samples, noise, dtype)
        _check_folds(cv_folds, cv_fold)
        if streaming not in STREAMING:
            raise ValueError(f"streaming={streaming!r} is not accepted: use one of {', '.join(STREAMING)}")
        if memory_budget_mb is not None and not memory_budget_mb > 0:
            raise ValueError(f"memory_budget_mb={memory_budget_mb!r} must be > 0 (or null: by the device)")
        self.streaming, self.memory_budget_mb = streaming, memory_budget_mb
        self.train_chunk_rows: int | None = None  # streamed: training rows per chunk on the device
        self.cv_folds, self.cv_fold = cv_folds, cv_fold
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r} is not accepted: use one of {', '.join(SCALINGS)}")
        self.scaling = scaling
        self.dataset = dataset
        self.target = target
        self.requested_task = task  # `task` is the resolved one, after loading
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.n_samples = n_samples
        self.noise = noise
        self.dtype = dtype
        self._splits: _Splits | None = None

    task = _loaded("task", '"classification" or "regression".')
    classes = _loaded("classes", "Original class labels (int or str) by label; or None.")
    target_low = _loaded("target_low", "Training min of each regression output; or None.")
    target_high = _loaded("target_high", "Training max of each regression output; or None.")
    x_offset = _loaded("x_offset", "Training min or mean of each input, (n_features,).")
    x_scale = _loaded("x_scale", "Training range or std of each input (1 if constant), (n_features,).")
    x_train = _loaded("x_train", "Standardized training inputs, (n_train, n_features).")
    y_train = _loaded("y_train", "Training targets, (n_train, n_outputs).")
    x_val = _loaded("x_val", "Standardized validation inputs, (n_val, n_features).")
    y_val = _loaded("y_val", "Validation targets, (n_val, n_outputs).")
    x_test = _loaded("x_test", "Standardized test inputs, (n_test, n_features).")
    y_test = _loaded("y_test", "Test targets, (n_test, n_outputs).")
    labels_train = _loaded("labels_train", "Training class labels, (n_train,) long; or None.")
    labels_val = _loaded("labels_val", "Validation class labels, (n_val,) long; or None.")
    labels_test = _loaded("labels_test", "Test class labels, (n_test,) long; or None.")
    rows_train = _loaded("rows_train", "Each training example's row in the data set, (n_train,) long.")
    rows_val = _loaded("rows_val", "Each validation example's row in the data set, (n_val,) long.")
    rows_test = _loaded("rows_test", "Each test example's row in the data set, (n_test,) long.")

    @property
    def n_features(self) -> int:
        """The number of inputs."""
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        """The number of classes (classification) or of target columns (regression)."""
        return self.y_train.shape[1]

    def describe(self) -> str:
        """A one-line summary, e.g. ``iris: classification, 90/30/30 train/val/test examples,
        4 features -> 3 outputs``."""
        splits = self._load()
        sizes = "/".join(str(len(x)) for x in (splits.x_train, splits.x_val, splits.x_test))
        fold = f" (val = fold {self.cv_fold} of {self.cv_folds})" if self.cv_folds else ""
        return (
            f"{self.dataset}: {splits.task}, {sizes} train/val/test examples{fold}, "
            f"{self.n_features} features -> {self.n_outputs} outputs"
        )

    def setup(self, stage: str) -> None:
        """Load the data (once) and move it to the trainer's device (once), if there is one;
        a streamed training split stays in host memory (see :meth:`chunk_rows`)."""
        splits = self._load()
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.train_chunk_rows = self.chunk_rows(device)
            if splits.x_val.device != device:
                moved = splits.to(device)
                if self.train_chunk_rows is not None:  # the model moves it chunk by chunk
                    pin = device.type == "cuda"
                    x, y = (t.pin_memory() if pin else t for t in (splits.x_train, splits.y_train))
                    moved = replace(moved, x_train=x, y_train=y)
                self._splits = moved

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """As Lightning does, except for a streamed training split: it stays on the host and
        the model moves it chunk by chunk (``train_chunk_rows`` examples at a time)."""
        if self.train_chunk_rows is not None and self.trainer is not None and self.trainer.training:
            return batch
        if isinstance(batch, tuple) and all(isinstance(t, Tensor) and t.device == device for t in batch):
            return batch  # held there already (the usual case): nothing to walk or move, every epoch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def chunk_rows(self, device: torch.device) -> int | None:
        """Training rows per chunk when the training split is streamed to ``device`` (``None``:
        it is held there whole). ``streaming="auto"`` streams when the split is larger than the
        memory budget: ``memory_budget_mb`` if given, else half the free memory of a CUDA device
        (on the CPU the data is in host memory anyway); ``"on"`` always streams, ``"off"`` never."""
        if self.streaming == "off":
            return None
        x, y = self.x_train, self.y_train
        row_bytes = (x.shape[1] + y.shape[1]) * x.element_size()
        if self.memory_budget_mb is not None:
            budget = self.memory_budget_mb * 2**20
        elif device.type == "cuda":
            budget = torch.cuda.mem_get_info(device)[0] / 2
        else:
            budget = DEFAULT_STREAM_BUDGET_MB * 2**20 if self.streaming == "on" else math.inf
        if self.streaming == "auto" and len(x) * row_bytes <= budget:
            return None
        return max(1, int(budget // row_bytes))

    def train_dataloader(self) -> _WholeSplit | list:
        """One batch per epoch, ``Batch(x_train, y_train)``: the model shuffles and slices."""
        return _one_batch_loader(self.x_train, self.y_train)

    def val_dataloader(self) -> _WholeSplit | list:
        """One batch ``Batch(x_val, y_val)``, or ``[]`` when ``val_fraction == 0``."""
        return _one_batch_loader(self.x_val, self.y_val)

    def test_dataloader(self) -> _WholeSplit | list:
        """One batch ``Batch(x_test, y_test)``, or ``[]`` when ``test_fraction == 0``."""
        return _one_batch_loader(self.x_test, self.y_test)

    def predict_dataloader(self) -> _WholeSplit | list:
        """The test split with its targets, ``Batch(x_test, y_test)``, like the test loader."""
        return _one_batch_loader(self.x_test, self.y_test)

    def _load(self) -> _Splits:
        """Read, split, scale and encode the data set, the first time only."""
        if self._splits is None:
            source = (
                f"data file {self.dataset!r}"
                if self.dataset.endswith(FILE_SUFFIXES)
                else f"dataset {self.dataset!r}"
            )
            try:
                self._splits = self._read_and_split()
            except DataError as err:
                raise DataError(f"{source}: {err}") from None
        return self._splits

    def _read_and_split(self) -> _Splits:
        x, targets, task, classes, n_file_test = self._read()
        labels = targets if task == "classification" else None
        stratify = None if labels is None else np.asarray(classes)[labels]  # (n,) class values
        if n_file_test:  # the file's own test split, its last rows, is kept; val comes from the rest
            n_rest = len(x) - n_file_test
            rest = None if stratify is None else stratify[:n_rest]
            train, val, _ = split_indices(
                n_rest, self.val_fraction, 0.0, self.seed, rest, self.cv_folds, self.cv_fold
            )
            indices = (train, val, np.arange(n_rest, len(x)))
        else:
            indices = split_indices(
                len(x),
                self.val_fraction,
                self.test_fraction,
                self.seed,
                stratify,
                self.cv_folds,
                self.cv_fold,
            )
        splits = dict(zip(("train", "val", "test"), indices, strict=True))
        train = splits["train"]
        offset, scale = scaling_stats(x[train], self.scaling)
        x = torch.as_tensor(scale_inputs(x, offset, scale), dtype=DTYPES[self.dtype])  # (n, d)
        targets = torch.as_tensor(targets)
        if task == "classification":
            y = torch.eye(len(classes), dtype=x.dtype)[targets]  # (n, n_classes) one-hot
            low = high = None
        else:
            low, high = targets[train].amin(dim=0), targets[train].amax(dim=0)  # (k,)
            y = to_unit_range(targets, low, high).to(x.dtype)  # (n, k)
            low, high = low.tolist(), high.tolist()
        return _Splits(
            task=task,
            classes=classes,
            target_low=low,
            target_high=high,
            x_offset=torch.as_tensor(offset, dtype=x.dtype),
            x_scale=torch.as_tensor(scale, dtype=x.dtype),
            **{f"x_{name}": x[index] for name, index in splits.items()},
            **{f"y_{name}": y[index] for name, index in splits.items()},
            **{
                f"labels_{name}": None if labels is None else targets[index] for name, index in splits.items()
            },
            **{f"rows_{name}": torch.as_tensor(index, dtype=torch.long) for name, index in splits.items()},
        )

    def _read(self) -> tuple[np.ndarray, np.ndarray, str, list | None, int]:
        """``(x, targets, task, classes, n_file_test)``: inputs ``(n, d)`` and, for
        classification, labels ``(n,)`` indexing ``classes``, for regression targets ``(n, k)``;
        a file in MNIST's layout (:func:`read_npz_splits`) has its own test split, its last
        ``n_file_test`` rows (0: none)."""
        if self.dataset in BUILTIN_LOADERS:
            bunch = BUILTIN_LOADERS[self.dataset]()
            classes = [name.item() for name in np.asarray(bunch.target_names)]
            return bunch.data.astype(np.float64), bunch.target, "classification", classes, 0
        if self.dataset == "xor":
            x, labels = make_xor(self.n_samples, self.noise, self.seed)
            return x, labels, "classification", [0, 1], 0
        if self.dataset == "sine":
            x, y = make_sine(self.n_samples, self.noise, self.seed)
            return x, y, "regression", None, 0
        n_file_test = 0
        if self.dataset.endswith(".csv"):
            x, raw = read_csv(self.dataset, self.target)
        elif self.target is None and (layout := read_npz_splits(self.dataset)) is not None:
            x, raw, n_file_test = layout
        else:
            x, raw = read_npz(self.dataset, self.target or "y")
        task, targets, classes = encode_targets(raw, self.requested_task)
        return x, targets, task, classes, n_file_test


def _check_folds(cv_folds, cv_fold) -> None:
    """Raise ValueError naming a bad cross-validation argument and what is accepted."""
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, int) or cv_folds == 1 or cv_folds < 0:
        raise ValueError(f"cv_folds={cv_folds!r} is not accepted: use 0 (no folds) or an int >= 2")
    if isinstance(cv_fold, bool) or not isinstance(cv_fold, int) or not 0 <= cv_fold < max(cv_folds, 1):
        allowed = f"an int in [0, {cv_folds - 1}]" if cv_folds else "0 without cv_folds"
        raise ValueError(f"cv_fold={cv_fold!r} is out of range: use {allowed}")


def _check_regular_file(dataset: str) -> None:
    """Raise DataError unless ``dataset`` names a regular file (through links that resolve)."""
    what = f"data file {dataset!r}"
    try:
        mode = os.stat(dataset).st_mode
    except FileNotFoundError:
        if os.path.islink(dataset):
            raise DataError(
                f"{what} is a symbolic link to a missing file; fix the link or the path"
            ) from None
        raise DataError(f"{what} does not exist (relative to {Path.cwd()}); check the path") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DataError(f"{what} is a symbolic link that loops back on itself; fix the link") from None
        raise DataError(f"{what} cannot be opened ({err.strerror}); check the path") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} is a folder, not a file; give the path of the file in it")
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
        kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
        raise DataError(f"{what} is {kind}, not a regular file; give a .csv or .npz file")


def _check_arguments(
    dataset, target, task, val_fraction, test_fraction, seed, n_samples, noise, dtype
) -> None:
    """Raise ValueError naming the first bad argument of MLPDataModule and what is accepted."""
    for name, value, choices in (("task", task, TASKS), ("dtype", dtype, tuple(DTYPES))):
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not accepted: use one of {', '.join(choices)}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ValueError(f"{name}={value!r} is out of range: {FRACTION_RULE}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} + test_fraction={test_fraction} = "
            f"{val_fraction + test_fraction} is out of range: {FRACTION_RULE}"
        )
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r} is out of range: seed must be an int in [0, 2**32)")
    if not isinstance(n_samples, int) or n_samples < MIN_GENERATED_SAMPLES:
        raise ValueError(
            f"n_samples={n_samples!r} is too small: n_samples must be an int >= "
            f"{MIN_GENERATED_SAMPLES} (one point per XOR corner)"
        )
    if not isinstance(noise, int | float) or not 0 <= noise < math.inf:
        raise ValueError(f"noise={noise!r} is out of range: noise must be a finite number >= 0")
    fixed_task = "classification" if dataset in BUILTIN_LOADERS else GENERATED_TASKS.get(dataset)
    if fixed_task is not None:
        if target is not None:
            raise ValueError(
                f"target={target!r} does not apply to dataset={dataset!r}: target names the "
                "target column or array of a .csv or .npz file"
            )
        if task not in ("auto", fixed_task):
            raise ValueError(
                f"task={task!r} does not fit dataset={dataset!r}, a {fixed_task} set: "
                f"use task='auto' or task={fixed_task!r}"
            )
    elif isinstance(dataset, str) and dataset.endswith(FILE_SUFFIXES):
        _check_regular_file(dataset)
        if dataset.endswith(".csv") and target is None:
            raise ValueError(
                f"target=None does not work with dataset={dataset!r}: a .csv file needs target, "
                "the name of its target column"
            )
    else:
        raise ValueError(
            f"dataset={dataset!r} is not known: use one of "
            f"{', '.join([*BUILTIN_LOADERS, *GENERATED_TASKS])}, or a path to a .csv or .npz file"
        )
