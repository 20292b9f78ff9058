"""Streamed training: the training split stays in host memory and goes to the device in chunks
of a memory budget, with exactly the update sequence of the in-memory run."""

import functools

import pytest
import torch

from mlp_torch.data import MLPDataModule
from mlp_torch.optim import Momentum
from mlp_torch.train.module import MLPModule
from tests.test_training import fit


def make(streaming, budget=None, dataset="digits", batch_size=16, dtype="float64", **data):
    dm = MLPDataModule(dataset, dtype=dtype, streaming=streaming, memory_budget_mb=budget, **data)
    module = MLPModule(n_inputs=dm.n_features, n_outputs=dm.n_outputs, dtype=dtype, batch_size=batch_size,
                       optimizer=functools.partial(Momentum, lr=1.0, alpha=0.9), l1=1e-4,
                       histograms_every_n_epochs=0)  # fmt: skip
    return dm, module


def test_streamed_equals_in_memory_float64():
    dm, in_memory = make("off")
    fit(dm, in_memory, epochs=3)
    assert in_memory.epoch_stats["chunks"] == 0
    budget = 0.05  # MiB: 88 digits rows of 74 float64 each, so 5 updates of 16 per chunk
    dm, streamed = make("auto", budget)
    fit(dm, streamed, epochs=3)
    assert dm.train_chunk_rows == 88 and streamed.epoch_stats["chunks"] == 14  # 68 updates
    torch.testing.assert_close(streamed.flat, in_memory.flat, rtol=0, atol=1e-10)
    assert streamed.epoch_stats["J"] == pytest.approx(in_memory.epoch_stats["J"], rel=1e-12)


def test_a_data_set_larger_than_the_budget_trains_and_a_batch_over_it_is_an_error():
    dm, module = make("auto", 0.02, dataset="xor", n_samples=4000, batch_size=64, dtype="float32")
    row_bytes = (2 + 2) * 4
    assert len(dm.x_train) * row_bytes > 0.02 * 2**20  # larger than the budget
    trainer = fit(dm, module, epochs=2)
    assert module.epoch_stats["chunks"] > 1 and dm.train_chunk_rows * row_bytes <= 0.02 * 2**20
    assert torch.isfinite(trainer.callback_metrics["val/J"])
    dm, module = make("on", 0.0001, dataset="xor", n_samples=400, batch_size=64)
    with pytest.raises(ValueError, match="do not fit the memory budget"):
        fit(dm, module, epochs=1)
