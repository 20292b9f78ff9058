"""Per-update cost of training through MLPModule (Lightning) against a bare PyTorch loop doing
the same updates (hand-written backprop of the default objective, with its L2 term, + Momentum),
measured side by side in one run.

    .venv/bin/python scripts/bench.py                 # digits, 64-100-10, batch 16, 20 epochs

Prints milliseconds per update for both and their ratio. The Lightning figure includes the
Trainer's start and end and one validation-free epoch step per epoch.
"""

from __future__ import annotations

import argparse
import logging
import time

import lightning.pytorch as L

from mlp_torch.backprop import backprop
from mlp_torch.data import MLPDataModule, epoch_permutation
from mlp_torch.module import DEFAULT_ALPHA, DEFAULT_L2, DEFAULT_LR, MLPModule
from mlp_torch.network import SigmoidMLP
from mlp_torch.optim import Momentum


def lightning_run(dm: MLPDataModule, epochs: int, batch_size: int) -> tuple[float, int]:
    module = MLPModule(
        n_inputs=dm.n_features, n_outputs=dm.n_outputs, batch_size=batch_size, histograms_every_n_epochs=0
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start, module.global_step


def bare_run(dm: MLPDataModule, epochs: int, batch_size: int) -> float:
    net = SigmoidMLP([dm.n_features, 100, dm.n_outputs], seed=0)
    opt = Momentum(net.parameters(), lr=DEFAULT_LR, alpha=DEFAULT_ALPHA)
    x, y = dm.x_train, dm.y_train
    start = time.perf_counter()
    for epoch in range(epochs):
        for i in epoch_permutation(len(x), 0, epoch).split(batch_size):
            bp = backprop(
                net.weights, net.biases, x[i], y[i], cost="cross_entropy", l2=DEFAULT_L2, scale=1 / len(i)
            )
            for layer, gW, gb in zip(net.layers, bp.grad_W, bp.grad_b):
                layer.weight.grad, layer.bias.grad = gW, gb
            opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    dm = MLPDataModule("digits")
    t_lightning, updates = lightning_run(dm, args.epochs, args.batch_size)
    t_bare = bare_run(dm, args.epochs, args.batch_size)
    ms = lambda t: 1e3 * t / updates  # noqa: E731
    print(
        f"{updates} updates: MLPModule {ms(t_lightning):.3f} ms/update, "
        f"bare loop {ms(t_bare):.3f} ms/update, ratio {t_lightning / t_bare:.2f}"
    )


if __name__ == "__main__":
    main()
