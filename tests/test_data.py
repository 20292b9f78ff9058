"""Tests of mlp_torch.data: real data sets, real files, a real (tiny) Lightning fit."""

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris

from mlp_torch.data import Batch, MLPDataModule, from_unit_range, to_unit_range
from mlp_torch.data.sources import make_sine, make_xor
from mlp_torch.train.loop import epoch_permutation

BUILTINS = {  # name: (n examples, n features, classes)
    "digits": (1797, 64, list(range(10))),
    "iris": (150, 4, ["setosa", "versicolor", "virginica"]),
    "wine": (178, 13, ["class_0", "class_1", "class_2"]),
    "breast_cancer": (569, 30, ["malignant", "benign"]),
}


@pytest.fixture(scope="module")
def digits():
    return MLPDataModule("digits")


@pytest.fixture(scope="module")
def sine():
    return MLPDataModule("sine", n_samples=200, noise=0.05, seed=3)


def write_csv(path, text):
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------------
# Built-in and generated sets


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_with_right_shapes(name):
    n, n_features, classes = BUILTINS[name]
    dm = MLPDataModule(name)
    assert (dm.task, dm.classes, dm.n_features, dm.n_outputs) == (
        "classification",
        classes,
        n_features,
        len(classes),
    )
    assert dm.target_low is None and dm.target_high is None
    sizes = [len(x) for x in (dm.x_train, dm.x_val, dm.x_test)]
    assert sum(sizes) == n
    assert sizes[1] == sizes[2] == round(0.2 * n)
    for x, y, labels in (
        (dm.x_train, dm.y_train, dm.labels_train),
        (dm.x_val, dm.y_val, dm.labels_val),
        (dm.x_test, dm.y_test, dm.labels_test),
    ):
        assert x.shape == (len(x), n_features) and x.dtype == torch.float32
        assert y.shape == (len(x), len(classes)) and y.dtype == torch.float32
        assert labels.shape == (len(x),) and labels.dtype == torch.long


def test_split_is_stratified(digits):
    iris = MLPDataModule("iris")
    for labels in (iris.labels_train, iris.labels_val, iris.labels_test):
        counts = torch.bincount(labels).tolist()
        assert counts == [len(labels) // 3] * 3  # 50 per class: exactly 30/10/10 each
    shares = [
        torch.bincount(labels, minlength=10) / len(labels)
        for labels in (digits.labels_train, digits.labels_val, digits.labels_test)
    ]
    for share in shares[1:]:
        assert (share - shares[0]).abs().max() < 0.01


def test_same_seed_same_split_other_seed_other_split():
    a, b = MLPDataModule("wine", seed=5), MLPDataModule("wine", seed=5)
    c = MLPDataModule("wine", seed=6)
    for name in ("x_train", "y_train", "x_val", "x_test", "labels_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.x_test, c.x_test)


def test_zero_fractions_leave_empty_splits():
    dm = MLPDataModule("iris", val_fraction=0.0, test_fraction=0.0)
    assert dm.x_train.shape == (150, 4)
    assert dm.x_val.shape == (0, 4) and dm.labels_test.shape == (0,)
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []


@pytest.mark.parametrize("name", ["wine", "sine"])
def test_cross_validation_folds_cover_the_non_test_examples_once(name):
    """k runs with cv_fold = 0..k-1: the same test split as without folds, the val folds
    partition the other examples (stratified for classes), training is the rest each time."""

    def rows(x):  # the examples of a split, as a set of raw input rows
        return {tuple(r) for r in x.tolist()}

    plain = MLPDataModule(name, seed=4, dtype="float64", n_samples=100)
    raw = lambda dm, x: x * dm.x_scale + dm.x_offset  # noqa: E731 (undo the per-fold scaling)
    k, val_rows = 4, []
    for fold in range(k):
        dm = MLPDataModule(name, seed=4, dtype="float64", n_samples=100, cv_folds=k, cv_fold=fold)
        test, train, val = (rows(raw(dm, x).round(decimals=9)) for x in (dm.x_test, dm.x_train, dm.x_val))
        assert test == rows(raw(plain, plain.x_test).round(decimals=9))
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(dm.x_train) + len(dm.x_val) == len(plain.x_train) + len(plain.x_val)
        if dm.task == "classification":
            non_test = torch.cat([plain.labels_train, plain.labels_val])
            expected = torch.bincount(non_test) / k  # (3,) each class's share of one fold
            assert (torch.bincount(dm.labels_val, minlength=3) - expected).abs().max() <= 1
        val_rows.append(val)
        assert f"(val = fold {fold} of {k})" in dm.describe()
    assert sum(len(v) for v in val_rows) == len(set().union(*val_rows))  # disjoint
    assert set().union(*val_rows) == rows(raw(plain, plain.x_train).round(decimals=9)) | rows(
        raw(plain, plain.x_val).round(decimals=9)
    )


def test_minmax_scaling_uses_training_statistics_only(digits):
    assert digits.scaling == "minmax"
    x = digits.x_train
    constant = x.amax(0) == x.amin(0)  # blank border pixels
    assert constant.any() and (digits.x_scale[constant] == 1).all()
    assert constant.any() and (x[:, constant] == 0).all()
    torch.testing.assert_close(x[:, ~constant].amin(0), torch.zeros(int((~constant).sum())))
    torch.testing.assert_close(x[:, ~constant].amax(0), torch.ones(int((~constant).sum())))
    iris = MLPDataModule("iris")
    raw = iris.x_train * iris.x_scale + iris.x_offset  # (90, 4)
    torch.testing.assert_close(raw.amin(0), iris.x_offset)
    val = digits.x_val[:, ~constant]
    assert val.amin() < 0 or val.amax() > 1 or not torch.equal(val.amax(0), torch.ones(val.shape[1]))


def test_standardization_uses_training_statistics_only():
    digits = MLPDataModule("digits", scaling="standard")
    torch.testing.assert_close(digits.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    std = digits.x_train.std(0, correction=0)
    constant = digits.x_scale == 1  # digits has blank border pixels
    assert constant.any() and (digits.x_train[:, constant] == 0).all()
    torch.testing.assert_close(std[~constant], torch.ones(int((~constant).sum())))
    assert digits.x_val.mean(0).abs().max() > 0.01  # val is scaled by train stats, not its own
    # x_offset is the mean of the raw training inputs, not of the whole set
    iris = MLPDataModule("iris", scaling="standard")
    raw_train = iris.x_train * iris.x_scale + iris.x_offset  # (90, 4)
    torch.testing.assert_close(raw_train.mean(0), iris.x_offset)
    assert not torch.allclose(iris.x_offset, torch.tensor(load_iris().data.mean(0)).float())


def test_one_hot_matches_labels(digits):
    y, labels = digits.y_train, digits.labels_train
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert (y.sum(1) == 1).all()
    assert torch.equal(y.argmax(1), labels)


def test_regression_targets_mapped_into_unit_range(sine):
    assert (sine.task, sine.classes, sine.n_features, sine.n_outputs) == ("regression", None, 1, 1)
    assert sine.labels_train is None
    assert isinstance(sine.target_low, list) and isinstance(sine.target_low[0], float)
    assert sine.y_train.min().item() == pytest.approx(0.1)
    assert sine.y_train.max().item() == pytest.approx(0.9)
    # back in the target's units, y = sin(x) + noise
    x = sine.x_train * sine.x_scale + sine.x_offset  # (n, 1)
    y = from_unit_range(sine.y_test, sine.target_low, sine.target_high)
    assert (y - torch.sin(sine.x_test * sine.x_scale + sine.x_offset)).abs().max() < 5 * 0.05
    assert x.min() >= -math.pi and x.max() <= math.pi


def test_unit_range_round_trip_and_constant_output():
    y = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y[:, 2] = 7.0  # a constant output
    low, high = y.amin(0), y.amax(0)
    y01 = to_unit_range(y, low, high)
    assert y01.min() >= 0.1 - 1e-12 and y01.max() <= 0.9 + 1e-12
    torch.testing.assert_close(y01.amin(0)[:2], torch.full((2,), 0.1, dtype=torch.float64))
    torch.testing.assert_close(y01.amax(0)[:2], torch.full((2,), 0.9, dtype=torch.float64))
    assert torch.isfinite(y01).all()
    torch.testing.assert_close(from_unit_range(y01, low, high), y, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(from_unit_range(y01, low.tolist(), high.tolist()), y)


def test_xor_is_balanced_labeled_and_deterministic():
    x, labels = make_xor(400, 0.1, seed=0)
    assert x.shape == (400, 2) and labels.shape == (400,)
    corners = np.round(x).clip(0, 1).astype(int)  # noise 0.1: the nearest corner is the true one
    assert (labels == corners[:, 0] ^ corners[:, 1]).all()
    assert np.bincount(corners[:, 0] * 2 + corners[:, 1]).tolist() == [100] * 4
    again, other = make_xor(400, 0.1, seed=0), make_xor(400, 0.1, seed=1)
    assert np.array_equal(x, again[0]) and np.array_equal(labels, again[1])
    assert not np.array_equal(x, other[0])
    dm = MLPDataModule("xor", n_samples=40)
    assert (dm.classes, dm.n_features, len(dm.x_train)) == ([0, 1], 2, 24)


def test_sine_is_deterministic():
    x, y = make_sine(100, 0.0, seed=2)
    assert x.shape == y.shape == (100, 1)
    assert (np.abs(x) <= math.pi).all() and np.allclose(y, np.sin(x))
    assert np.array_equal(make_sine(100, 0.1, seed=2)[0], x)
    assert not np.array_equal(make_sine(100, 0.1, seed=3)[0], x)


def test_float64_dtype():
    dm = MLPDataModule("sine", dtype="float64")
    for name in ("x_train", "y_train", "x_val", "y_test", "x_offset", "x_scale"):
        assert getattr(dm, name).dtype == torch.float64
    assert MLPDataModule("iris", dtype="float64").y_train.dtype == torch.float64


def test_describe():
    assert MLPDataModule("iris").describe() == (
        "iris: classification, 90/30/30 train/val/test examples, 4 features -> 3 outputs"
    )


# ---------------------------------------------------------------------------------------------
# Shuffling and dataloaders


def test_epoch_permutation():
    order = epoch_permutation(100, seed=1, epoch=4)
    assert order.dtype == torch.long and torch.equal(order.sort().values, torch.arange(100))
    assert torch.equal(order, epoch_permutation(100, seed=1, epoch=4, device="cpu"))
    assert not torch.equal(order, epoch_permutation(100, seed=1, epoch=5))
    assert not torch.equal(order, epoch_permutation(100, seed=2, epoch=4))
    assert len(epoch_permutation(0, seed=2**32 - 1, epoch=10**9)) == 0


def test_dataloaders_yield_the_whole_split_once():
    dm = MLPDataModule("iris")
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    assert isinstance(batch, Batch)
    assert batch.x is dm.x_train and batch.y is dm.y_train
    for loader, x, y in (
        (dm.val_dataloader(), dm.x_val, dm.y_val),
        (dm.test_dataloader(), dm.x_test, dm.y_test),
        (dm.predict_dataloader(), dm.x_test, dm.y_test),
    ):
        ((bx, by),) = list(loader)
        assert bx is x and by is y


class _Recorder(pl.LightningModule):
    """A one-layer model that records the batches it gets."""

    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.layer = torch.nn.Linear(n_features, n_outputs)
        self.train_batches = []

    def training_step(self, batch, batch_idx):
        self.train_batches.append(batch)
        return torch.nn.functional.mse_loss(torch.sigmoid(self.layer(batch.x)), batch.y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_lightning_fit_gets_one_full_batch_per_epoch():
    dm = MLPDataModule("iris", val_fraction=0.0)
    model = _Recorder(dm.n_features, dm.n_outputs)
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert len(model.train_batches) == 3
    for batch in model.train_batches:
        assert torch.equal(batch.x, dm.x_train) and torch.equal(batch.y, dm.y_train)
    assert dm.x_train.device == trainer.strategy.root_device


# ---------------------------------------------------------------------------------------------
# User files


def test_csv_numeric_classification_and_regression(tmp_path):
    rows = "\n".join(f"{i},{i % 3},{i * 0.5},{i % 2}" for i in range(30))
    path = write_csv(tmp_path / "d.csv", "a,label,b,value\n" + rows + "\n")
    dm = MLPDataModule(path, target="label", val_fraction=0.2, test_fraction=0.2)
    assert (dm.task, dm.classes, dm.n_features, dm.n_outputs) == ("classification", [0, 1, 2], 3, 3)
    dm = MLPDataModule(path, target="b")  # 30 distinct non-integers -> regression
    assert (dm.task, dm.n_outputs) == ("regression", 1)
    assert dm.target_low[0] >= 0 and dm.target_high[0] <= 14.5
    dm = MLPDataModule(path, target="label", task="regression")
    assert (dm.task, dm.n_outputs) == ("regression", 1)


def test_csv_with_text_labels(tmp_path):
    names = ["cat", "dog", "emu"]
    rows = "\n".join(f"{i},{-i},{names[i % 3]}" for i in range(30))
    path = write_csv(tmp_path / "animals.csv", "x1,x2,animal\n" + rows + "\n")
    dm = MLPDataModule(path, target="animal")
    assert (dm.task, dm.classes, dm.n_features) == ("classification", names, 2)
    # the row with input x1 = i has label names[i % 3]
    x1 = torch.round(dm.x_train[:, 0] * dm.x_scale[0] + dm.x_offset[0]).long()  # (n_train,)
    assert torch.equal(dm.labels_train, x1 % 3)


def test_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(40) % 2)
    dm = MLPDataModule(str(tmp_path / "c.npz"))
    assert (dm.task, dm.classes, dm.n_features) == ("classification", [0, 1], 3)
    np.savez(tmp_path / "r.npz", x=x, targets=x[:, :2] * 3.0)
    dm = MLPDataModule(str(tmp_path / "r.npz"), target="targets")
    assert (dm.task, dm.n_outputs, len(dm.target_low)) == ("regression", 2, 2)
    assert dm.y_train.amin(0).tolist() == pytest.approx([0.1, 0.1])


# ---------------------------------------------------------------------------------------------
# Bad input: a ValueError that names the offending value


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "mnist"}, ["dataset='mnist'", "digits", ".csv"]),
        ({"dataset": "nowhere/missing.csv", "target": "y"}, ["nowhere/missing.csv", "not exist"]),
        ({"val_fraction": 1.5}, ["val_fraction=1.5", "[0, 1)"]),
        ({"test_fraction": -0.1}, ["test_fraction=-0.1", "[0, 1)"]),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, ["val_fraction=0.5", "< 1"]),
        ({"dtype": "float16"}, ["dtype='float16'", "float32, float64"]),
        ({"scaling": "robust"}, ["scaling='robust'", "minmax, standard"]),
        ({"task": "clustering"}, ["task='clustering'", "regression"]),
        ({"dataset": "iris", "task": "regression"}, ["task='regression'", "iris"]),
        ({"dataset": "xor", "n_samples": 3}, ["n_samples=3", ">= 4"]),
        ({"noise": -1.0}, ["noise=-1.0", ">= 0"]),
        ({"seed": -1}, ["seed=-1", "2**32"]),
        ({"dataset": "iris", "target": "y"}, ["target='y'", ".csv"]),
        ({"cv_folds": 1}, ["cv_folds=1", ">= 2"]),
        ({"cv_folds": 5, "cv_fold": 5}, ["cv_fold=5", "[0, 4]"]),
        ({"cv_fold": 2}, ["cv_fold=2", "without cv_folds"]),
    ],
)
def test_bad_arguments_raise_on_construction(kwargs, message):
    with pytest.raises(ValueError) as info:
        MLPDataModule(**kwargs)
    for part in message:
        assert part in str(info.value)


def test_csv_needs_target(tmp_path):
    path = write_csv(tmp_path / "d.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError, match="target=None"):
        MLPDataModule(path)


@pytest.mark.parametrize(
    "text, target, message",
    [
        ("a,b\n1,2\n", "y", ["no column 'y' among the 2 columns of its header row"]),
        ("a,b,y\n1,2,0\n1,abc,1\n", "y", ["column 2 of 3 is not numeric on line 3"]),
        ("a,b,y\n1,nan,0\n1,2,1\n", "y", ["column 2 of 3", "non-finite", "line 2"]),
        ("y,b,y\n1,2,0\n1,3,1\n", "y", ["names two columns alike (columns 1 and 3)"]),
        ("a,b,y\n1,2,0\n1,2\n", "y", ["line 3 has 2 fields", "header has 3"]),
        ("", "y", ["is empty"]),
        ("a,y\n", "y", ["no data rows"]),
        ("y\n1\n2\n", "y", ["no input columns"]),
    ],
)
def test_bad_csv_raises_naming_file_and_problem(tmp_path, text, target, message):
    """The message says where (the column's number, the line), never what the file holds: a data
    path can come from a checkpoint, and an error must not print another file's content."""
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError) as info:
        MLPDataModule(path, target=target).setup("fit")
    assert f"data file '{path}'" in str(info.value)
    for part in message:
        assert part in str(info.value)
    for cell in ("abc", "nan", "'a'", "'b'"):
        assert cell not in str(info.value).replace(str(path), "")


def test_bad_npz_raises(tmp_path):
    x = np.ones((20, 2))
    x[4, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(ValueError, match="array 'x' has a non-finite value in row 4"):
        MLPDataModule(str(tmp_path / "nan.npz")).setup("fit")
    np.savez(tmp_path / "noy.npz", x=x, z=x)
    with pytest.raises(ValueError, match="no array 'y'; available arrays: x, z"):
        MLPDataModule(str(tmp_path / "noy.npz")).setup("fit")
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="cannot be read as a NumPy .npz archive"):
        MLPDataModule(str(tmp_path / "junk.npz")).setup("fit")


def test_too_few_examples_raise(tmp_path):
    rows = "\n".join(f"{i},{'a' if i else 'b'}" for i in range(20))
    path = write_csv(tmp_path / "rare.csv", "x,y\n" + rows + "\n")
    with pytest.raises(ValueError, match="class 'b' has only 1 example"):
        MLPDataModule(path, target="y").setup("fit")
    with pytest.raises(ValueError, match="'xor': 5 examples .* the val split gets 1, it needs"):
        MLPDataModule("xor", n_samples=5).setup("fit")
