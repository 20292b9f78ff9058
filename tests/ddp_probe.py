"""A callback the DDP tests add to `mlp-torch fit` runs (``--trainer.callbacks``): each rank
saves what it trained and which training examples its own updates used."""

from pathlib import Path

import torch
from lightning.pytorch import Callback


class RecordRank(Callback):
    """Saves ``rank{r}.pt`` in ``out_dir`` at the end of training: the rank, the number of ranks,
    the final weights (the flat parameter tensor), per epoch the indices of the training examples
    this rank's backprop used (``MLPModule.epoch_examples``) and the logged cross-check error."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.examples: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.examples.append(pl_module.epoch_examples.cpu())

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        error = trainer.callback_metrics.get("gradcheck/max_rel_err")
        record = {
            "rank": trainer.global_rank,
            "world": trainer.world_size,
            "flat": pl_module.flat.detach().cpu().clone(),
            "examples": self.examples,
            "max_rel_err": None if error is None else float(error),
            "train_J": float(trainer.callback_metrics["train/J"]),
            "val_J": float(trainer.callback_metrics["val/J"]),
            "val_acc": float(trainer.callback_metrics["val/acc"]),
        }
        torch.save(record, self.out_dir / f"rank{trainer.global_rank}.pt")
