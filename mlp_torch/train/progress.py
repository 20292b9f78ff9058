"""One progress bar over the epochs of ``fit``, in place of Lightning's bar per epoch.

Each Lightning training step is a whole epoch here (see :mod:`mlp_torch.train.module`), so Lightning's
own bar shows ``1/1`` for every epoch plus a validation bar: thousands of lines in a log file.
:class:`EpochProgressBar` shows instead, once per epoch,

    epoch 37/199  train J 0.1234  val J 0.1456  val acc 96.94%  9,512 updates/s

as one live bar on a terminal, and as plain lines every ``every_n_epochs`` epochs (about twenty
lines in all by default) when stdout is a file or a pipe. Validation, test and predict show no bar.
Epochs count from 0 (``epoch 37/199``: the 38th of 200), as in the J-rise warnings, the checkpoint
names and TensorBoard; updates/s is the average since training started.
"""

from __future__ import annotations

import math
import sys
import time

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks.progress import ProgressBar

__all__ = ["EpochProgressBar", "epoch_line"]

PLAIN_LINES = 20  # about this many plain lines per run when stdout is not a terminal


def epoch_line(metrics: dict[str, float], updates_per_second: float) -> str:
    """``train J 0.1234  val J 0.1456  val acc 96.94%  9,512 updates/s`` from the epoch's metrics
    (those that are there)."""
    parts = []
    labels = {"train/J": "train J", "val/J": "val J", "val/acc": "val acc", "val/mse": "val mse"}
    for name, label in labels.items():
        if name in metrics:
            value = float(metrics[name])
            parts.append(f"{label} {value:.2%}" if name == "val/acc" else f"{label} {value:.6g}")
    parts.append(f"{updates_per_second:,.0f} updates/s")
    return "  ".join(parts)


class EpochProgressBar(ProgressBar):
    """A bar over epochs (a terminal) or a line every ``every_n_epochs`` epochs (a file or pipe).

    Args:
        every_n_epochs: plain lines only: print every n-th epoch (and the first and the last);
            ``None``: ``ceil(max_epochs / 20)``.
        stream: where to write (``None``: ``sys.stdout``, read when training starts).
    """

    def __init__(self, every_n_epochs: int | None = None, stream=None) -> None:
        super().__init__()
        if every_n_epochs is not None and (isinstance(every_n_epochs, bool) or every_n_epochs < 1):
            raise ValueError(f"every_n_epochs={every_n_epochs!r} must be an integer >= 1 (or None)")
        self.every_n_epochs = every_n_epochs
        self.stream = stream
        self._enabled = True
        self._bar = None
        self._last_line: tuple[int, str] | None = None  # (epoch, text) not yet printed

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._out = self.stream or sys.stdout
        self._total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self._every = self.every_n_epochs or max(1, math.ceil((self._total or PLAIN_LINES) / PLAIN_LINES))
        self._started, self._updates = time.perf_counter(), 0
        if self._out.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self._total, initial=trainer.current_epoch, desc="epoch", unit="epoch",
                file=self._out, dynamic_ncols=True, leave=True,
            )  # fmt: skip

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._updates += getattr(pl_module, "epoch_stats", {}).get("updates", 0)
        rate = self._updates / max(time.perf_counter() - self._started, 1e-9)
        members = getattr(pl_module, "progress_text", lambda: None)()
        text = (
            epoch_line(trainer.callback_metrics, rate)
            if members is None
            else f"{members}  {rate:,.0f} updates/s"
        )
        epoch = trainer.current_epoch  # from 0
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)
        elif epoch == 0 or (epoch + 1) % self._every == 0 or epoch + 1 == self._total:
            self._print(epoch, text)
        else:
            self._last_line = (epoch, text)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last_line is not None:  # stopped early: the last epoch's line
            self._print(*self._last_line)

    def _print(self, epoch: int, text: str) -> None:
        total = f"/{self._total - 1}" if self._total else ""
        print(f"epoch {epoch}{total}  {text}", file=self._out, flush=True)
        self._last_line = None
