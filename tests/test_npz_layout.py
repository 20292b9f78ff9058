"""MNIST's common .npz layout (x_train, y_train, x_test, y_test), read directly from a generated
file of that layout: images flattened, the file's own test split kept."""

import numpy as np
import pytest
import torch

from mlp_torch.data import DataError, MLPDataModule


def write_mnist_like(path, n_train=60, n_test=20, shape=(4, 4), seed=0, **override):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % 3,
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return arrays


def test_images_are_flattened_and_the_files_test_split_is_kept(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = write_mnist_like(path)
    dm = MLPDataModule(str(path), val_fraction=0.25, test_fraction=0.2)
    assert (len(dm.x_train), len(dm.x_val), len(dm.x_test)) == (45, 15, 20)
    assert dm.n_features == 16 and dm.n_outputs == 3 and dm.task == "classification"
    # the test split is the file's, in its order, scaled with the training split's statistics
    x_test = torch.as_tensor(arrays["x_test"].reshape(20, 16), dtype=torch.float64)
    torch.testing.assert_close(dm.x_test.double(), ((x_test - dm.x_offset.double()) / dm.x_scale.double()))
    assert torch.equal(dm.labels_test, torch.as_tensor(arrays["y_test"]))
    # train and val are the file's training examples, each once
    assert sorted(torch.cat([dm.rows_train, dm.rows_val]).tolist()) == list(range(60))
    assert dm.rows_test.tolist() == list(range(60, 80))


def test_mismatched_image_shapes_are_a_data_error(tmp_path):
    path = tmp_path / "bad.npz"
    write_mnist_like(path, x_test=np.zeros((20, 5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"test examples \('x_test'\) \(5, 5\); they must match"):
        MLPDataModule(str(path)).describe()


def test_a_file_of_that_layout_trains(tmp_path):
    from mlp_torch.train.module import MLPModule
    from tests.test_training import fit

    path = tmp_path / "mnist.npz"
    write_mnist_like(path, n_train=200, n_test=50)
    dm = MLPDataModule(str(path), val_fraction=0.2)
    module = MLPModule(n_inputs=dm.n_features, n_outputs=dm.n_outputs, hidden_sizes=[8])
    trainer = fit(dm, module, epochs=2)
    assert trainer.global_step == 2 * -(-160 // 16)
    assert torch.isfinite(trainer.callback_metrics["val/J"])
