"""The LightningDataModule: one data set read, split, scaled and encoded once, each split served
as a single batch."""

import copy
import math
from dataclasses import dataclass, fields, replace
from typing import Literal, NamedTuple

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from mlp_torch.data.base import (
    DEFAULT_STREAM_BUDGET_MB,
    DTYPES,
    FILE_SUFFIXES,
    FRACTION_RULE,
    MIN_GENERATED_SAMPLES,
    SCALINGS,
    STREAMING,
    TASKS,
    DataError,
)
from mlp_torch.data.files import (
    check_regular_file,
    csv_header,
    read_csv,
    read_new_rows,
    read_npz,
    read_npz_splits,
)
from mlp_torch.data.prepare import (
    encode_targets,
    from_unit_range,
    scale_inputs,
    scaling_stats,
    split_indices,
    to_unit_range,
)
from mlp_torch.data.sources import BUILTIN_LOADERS, GENERATED_TASKS, make_sine, make_xor


class Batch(NamedTuple):
    """One batch: a whole split."""

    x: Tensor  # (n, n_features)
    y: Tensor  # (n, n_outputs)


class _WholeSplit:
    """An iterable of one batch, the whole split.

    Not a ``DataLoader``: Lightning leaves it alone, so under DDP it injects no
    ``DistributedSampler`` (which would pad the split to a multiple of the ranks, repeating
    examples) and every rank gets the very tensors, on their device; the model takes each rank's
    share by index (see :mod:`mlp_torch.train.distributed`). Not a list either: Lightning would read a
    list as several loaders."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


def _one_batch_loader(x: Tensor, y: Tensor) -> _WholeSplit | list:
    """An iterable yielding ``Batch(x, y)`` once, or ``[]`` for an empty split."""
    return _WholeSplit(Batch(x, y)) if x.shape[-2] else []


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

    @staticmethod
    def stacked(splits: list["_Splits"]) -> "_Splits":
        """Several members' data as one: each split's inputs and targets stacked, ``(K, n, ...)``
        (what else the first member has: a sweep's table reads nothing more)."""
        stacked = {f"{v}_{split}": torch.stack([getattr(s, f"{v}_{split}") for s in splits])
                   for v in "xy" for split in SPLITS}  # fmt: skip
        return replace(splits[0], **stacked)


SPLITS = ("train", "val", "test")


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
        predict_file: str | None = None,
    ):
        super().__init__()
        if predict_file is not None:
            if not (isinstance(predict_file, str) and predict_file.endswith(FILE_SUFFIXES)):
                raise ValueError(f"predict_file={predict_file!r} must be the path of a .csv or .npz file")
            try:
                check_regular_file(predict_file)
            except DataError as err:
                raise DataError(f"--data.predict_file: {err}") from None
        self.predict_file = predict_file
        self._new_rows: tuple[Tensor, list] | None = None
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
        self.members = 1  # how many networks' batches are made from each training row (a sweep's K)

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
        return self.x_train.shape[-1]

    @property
    def n_outputs(self) -> int:
        """The number of classes (classification) or of target columns (regression)."""
        return self.y_train.shape[-1]

    @classmethod
    def of_members(cls, datamodules: list["MLPDataModule"], names: list[str]) -> "MLPDataModule":
        """The data of a sweep's members, ``datamodules[k]`` member ``k``'s (the same object
        where members share their data): that one module when they all do, else one whose splits
        are stacked ``(K, n, ...)`` (the members' splits must then have equal sizes)."""
        first = datamodules[0]
        if all(dm is first for dm in datamodules):
            return first
        for split in SPLITS:
            sizes = [len(getattr(dm, f"x_{split}")) for dm in datamodules]
            for name, n in zip(names, sizes):
                if n != sizes[0]:
                    raise ValueError(
                        f"the {split} split has {sizes[0]} examples in member {names[0]} but {n} in {name}: "
                        "members with their own data must have splits of equal sizes"
                    )
        stacked = copy.copy(first)
        stacked._splits = _Splits.stacked([dm._load() for dm in datamodules])
        stacked.members = len(datamodules)
        return stacked

    def describe(self) -> str:
        """A one-line summary, e.g. ``iris: classification, 90/30/30 train/val/test examples,
        4 features -> 3 outputs``."""
        splits = self._load()
        sizes = "/".join(str(x.shape[-2]) for x in (splits.x_train, splits.x_val, splits.x_test))
        fold = f" (val = fold {self.cv_fold} of {self.cv_folds})" if self.cv_folds else ""
        return (
            f"{self.dataset}: {splits.task}, {sizes} train/val/test examples{fold}, "
            f"{self.n_features} features -> {self.n_outputs} outputs"
        )

    def setup(self, stage: str) -> None:
        """Load the data (once) and move it to the trainer's device (once), if there is one;
        a streamed training split stays in host memory (see :meth:`chunk_rows`)."""
        splits = self._load()
        if stage == "predict" and self.predict_file is not None:
            self._read_new_rows()  # a bad file is refused before the checkpoint is loaded
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
        row_bytes = (x.shape[-1] + y.shape[-1]) * x.element_size() * self.members  # every member's row
        if self.memory_budget_mb is not None:
            budget = self.memory_budget_mb * 2**20
        elif device.type == "cuda":
            budget = torch.cuda.mem_get_info(device)[0] / 2
        else:
            budget = DEFAULT_STREAM_BUDGET_MB * 2**20 if self.streaming == "on" else math.inf
        if self.streaming == "auto" and x.shape[-2] * row_bytes <= budget:
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
        """The test split with its targets, ``Batch(x_test, y_test)``, like the test loader; with
        ``predict_file``, that file's rows, scaled as the training split was (their targets, if
        any, are those of :meth:`prediction_targets`)."""
        if self.predict_file is None:
            return _one_batch_loader(self.x_test, self.y_test)
        x, _ = self._read_new_rows()
        return _one_batch_loader(x, x.new_zeros((len(x), 0)))

    @property
    def predicting(self) -> str:
        """What ``predict`` predicts: "the test split" or the file's name."""
        return "the test split" if self.predict_file is None else self.predict_file

    def prediction_targets(self) -> tuple[list[int], list]:
        """``(rows, targets)`` of what ``predict`` predicts: each example's row (in the data set,
        or the data row in ``predict_file``, from 0) and its target: a class index
        (classification) or the target values in their units (regression), ``None`` if unknown."""
        if self.predict_file is not None:
            _, targets = self._read_new_rows()
            return list(range(len(targets))), targets
        rows = self.rows_test.cpu().tolist()
        if self.task == "classification":
            return rows, self.labels_test.cpu().tolist()
        return rows, from_unit_range(self.y_test.cpu(), self.target_low, self.target_high).tolist()

    def _read_new_rows(self) -> tuple[Tensor, list]:
        """``predict_file``'s inputs, scaled as training's ``(n, d)``, and its encoded targets."""
        if self._new_rows is None:
            splits = self._load()
            inputs = None
            if self.dataset.endswith(".csv"):
                inputs = [name for name in csv_header(self.dataset) if name != self.target]
            label = self.target or ("y" if self.dataset.endswith(".npz") else "target")
            try:
                x, raw = read_new_rows(self.predict_file, self.n_features, label, inputs)
                targets = [None if t is None else self._encode_new_target(t, label) for t in raw]
            except DataError as err:
                raise DataError(f"predict_file {self.predict_file!r}: {err}") from None
            x = torch.as_tensor(scale_inputs(x, *self._scaling), dtype=DTYPES[self.dtype])  # (n, d)
            self._new_rows = (x.to(splits.x_val.device), targets)
        return self._new_rows

    def _encode_new_target(self, value, label: str):
        """A target read from ``predict_file``: its class index, or its values (regression)."""
        if self.task == "regression":
            values = value if isinstance(value, list) else [value]
            try:
                numbers = [float(v) for v in values]
            except ValueError:
                raise DataError(f"its target {label!r} {value!r} is not a number") from None
            if len(numbers) != self.n_outputs:
                raise DataError(
                    f"its target {label!r} has {len(numbers)} values, the network {self.n_outputs}"
                )
            return numbers
        for k, name in enumerate(self.classes):
            if str(name) == value:
                return k
        try:
            number = float(value)
            return next(
                k for k, name in enumerate(self.classes) if not isinstance(name, str) and name == number
            )
        except (ValueError, StopIteration):
            shown = ", ".join(map(str, self.classes[:10])) + (", ..." if len(self.classes) > 10 else "")
            raise DataError(
                f"its target {label!r} has {value[:40]!r}, not a class the network was trained on ({shown}); "
                "leave it blank to predict without one"
            ) from None

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
        self._scaling = (offset, scale)  # float64, for predict_file's rows
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
        check_regular_file(dataset)
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
