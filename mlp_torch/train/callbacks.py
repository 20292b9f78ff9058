"""The notes' learning-rate practice as Lightning callbacks.

* J must fall: when the epoch's training J rises, :class:`LearningRateDiagnostics` warns (console
  and TensorBoard) that the learning rate may be too large, naming both values of J and the rate.
* A non-finite J stops training at once (:class:`NonFiniteObjectiveError`), naming the update and
  the rate; the checkpoints already written are kept.
* Convergence: :class:`ConvergenceStop` stops when the change in training J between epochs stays
  below a threshold (1e-3 by default) for ``patience`` epochs, and says so.
* Saturation: when training ends with the output sigmoids saturated at chance accuracy,
  :class:`LearningRateDiagnostics` says so (a flat J there is not convergence).

Both read ``pl_module.epoch_stats``, which :class:`mlp_torch.module.MLPModule` fills each epoch,
and log through its ``log_epoch`` (one call per epoch for all names, unlike ``self.log``).
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["ConvergenceStop", "LearningRateDiagnostics", "NonFiniteObjectiveError"]

log = logging.getLogger(__name__)  # one plain line on stderr by default

SATURATED = 0.01  # an output sigmoid within this of 0 or 1 is saturated: f'(z) < 0.01
SATURATED_SHARE = 0.9  # the saturation warning needs this share of all outputs saturated


class NonFiniteObjectiveError(RuntimeError):
    """Training J became NaN or infinite."""


class LearningRateDiagnostics(Callback):
    """Warn when the epoch's training J rises; stop with an error when it is not finite.

    Args:
        warn_on_increase: warn when J rises by more than ``rise_tolerance`` (relative).
        rise_tolerance: relative rise ignored as noise (0: any rise warns, as the notes say).
        max_printed: rises printed on the console; later ones are only counted (``increases``,
            ``largest_rise``) and logged to TensorBoard. With mini-batches J wobbles by a few
            percent from epoch to epoch once training has levelled off, and a long run would
            otherwise print a line for a third or more of its epochs.
        warn_on_saturation: when training ends, warn if at least 90% of the output sigmoids on
            the training split are within 0.01 of 0 or 1 while the network is no better than
            chance (or the task is regression): the gradient vanished, J stopped changing
            without converging (e.g. a rate far too large with the quadratic cost).
    """

    def __init__(
        self,
        warn_on_increase: bool = True,
        rise_tolerance: float = 0.0,
        max_printed: int = 10,
        warn_on_saturation: bool = True,
    ) -> None:
        if not (rise_tolerance >= 0 and math.isfinite(rise_tolerance)):
            raise ValueError(f"rise_tolerance={rise_tolerance!r} must be a finite number >= 0")
        if isinstance(max_printed, bool) or not isinstance(max_printed, int) or max_printed < 0:
            raise ValueError(f"max_printed={max_printed!r} must be an integer >= 0")
        self.warn_on_increase, self.rise_tolerance = warn_on_increase, rise_tolerance
        self.max_printed, self.warn_on_saturation = max_printed, warn_on_saturation
        self.previous_J: float | None = None
        self.increases: list[str] = []
        self.largest_rise = 0.0  # the largest relative rise, (J - previous J) / previous J

    def _check_J(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stats = pl_module.epoch_stats
        J, lr, epoch = stats["J"], stats["lr"], trainer.current_epoch
        if stats["first_nonfinite_update"] >= 0 or not math.isfinite(J):
            k = max(stats["first_nonfinite_update"], 0)
            update = trainer.global_step - stats["updates"] + k + 1
            ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
            kept = f"; the last good checkpoint is {ckpt}" if ckpt else ""
            raise NonFiniteObjectiveError(
                f"training J became non-finite at update {update} (epoch {epoch}, update {k + 1} of "
                f"{stats['updates']}) with learning rate {lr:g}: the rate is far too large, lower it "
                f"(e.g. --model.optimizer.lr {lr / 10:g}){kept}"
            )
        prev = self.previous_J
        self.previous_J = J
        if self.warn_on_increase and prev is not None and J > prev * (1 + self.rise_tolerance):
            msg = (
                f"epoch {epoch}: training J rose from {prev:.6g} to {J:.6g} with learning rate {lr:g}; "
                f"the learning rate may be too large"
            )
            self.increases.append(msg)
            self.largest_rise = max(self.largest_rise, (J - prev) / prev if prev > 0 else math.inf)
            if len(self.increases) <= self.max_printed:
                rank_zero_only(log.warning)(msg)
            elif len(self.increases) == self.max_printed + 1:
                rank_zero_only(log.warning)(
                    f"epoch {epoch}: training J rose again; further rises are not printed: the summary "
                    "counts them and TensorBoard logs each one (diagnostics/J_rose)"
                )
            if isinstance(trainer.logger, TensorBoardLogger):
                trainer.logger.experiment.add_text("diagnostics/J_rose", msg, epoch)
        pl_module.log_epoch({"diagnostics/J_rose": float(prev is not None and J > prev)})

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, *args) -> None:
        self._check_J(trainer, pl_module)
        self._last_batch = batch  # the whole training split; looked at once, when training ends

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn when the output sigmoids are saturated and the network is no better than chance:
        ``f'(z)`` is then ~0, the gradient vanishes and J stops changing without converging."""
        batch = getattr(self, "_last_batch", None)
        if not self.warn_on_saturation or batch is None:
            return
        x, y = batch[0], batch[1]  # (N, n_in), (N, n_out)
        with torch.no_grad():
            a = pl_module(x)  # (N, n_out)
        saturated = float((torch.minimum(a, 1 - a) < SATURATED).float().mean())
        if saturated < SATURATED_SHARE:
            return
        if pl_module.hparams.get("task") == "regression":
            why = "a regression target lies in [0.1, 0.9], so saturated outputs cannot fit it"
        else:
            accuracy = float((a.argmax(dim=1) == y.argmax(dim=1)).float().mean())
            chance = float(y.mean(dim=0).max())  # always predicting the largest class
            if accuracy > chance + 0.05:
                return
            why = f"training accuracy {accuracy:.1%} is at chance ({chance:.1%})"
        lr = pl_module.epoch_stats.get("lr", float("nan"))
        rank_zero_only(log.warning)(
            f"the outputs are saturated: {saturated:.0%} of the output sigmoids are within {SATURATED:g} "
            f"of 0 or 1 and {why}; there f'(z) ~ 0, the gradient vanishes and J stops changing without "
            f"converging. Lower the learning rate (it was {lr:g}), or use --model.cost cross_entropy"
        )

    def state_dict(self) -> dict:
        return {"previous_J": self.previous_J, "increases": self.increases, "largest_rise": self.largest_rise}

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed run counts the J rises of the whole run, not only of the resumed part."""
        increases = state_dict.get("increases", [])
        if not isinstance(increases, list) or not all(isinstance(m, str) for m in increases):
            raise ValueError(f"increases must be a list of messages, got {type(increases).__name__}")
        self.previous_J = _number_or_none(state_dict, "previous_J")
        self.increases = list(increases)
        self.largest_rise = _number_or_none({"largest_rise": 0.0, **state_dict}, "largest_rise")


class ConvergenceStop(Callback):
    """Stop when ``|J(epoch) - J(epoch - 1)| < threshold`` for ``patience`` epochs in a row.

    Args:
        threshold: the change in training J counted as no change (the notes: 1e-3).
        patience: consecutive epochs below the threshold before stopping.
        enabled: ``False`` turns the stop off (train for ``max_epochs``).
    """

    def __init__(self, threshold: float = 1e-3, patience: int = 3, enabled: bool = True) -> None:
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold={threshold!r} must be a finite number >= 0")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience={patience!r} must be an integer >= 1")
        self.threshold, self.patience, self.enabled = threshold, patience, enabled
        self.previous_J: float | None = None
        self.count = 0
        self.reason: str | None = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        J = pl_module.epoch_stats.get("J")
        if J is None:
            return
        prev, self.previous_J = self.previous_J, J
        if prev is None or not self.enabled:
            return
        change = abs(J - prev)
        self.count = self.count + 1 if change < self.threshold else 0
        if self.count >= self.patience:
            self.reason = (
                f"converged at epoch {trainer.current_epoch}: the change in training J was below "
                f"{self.threshold:g} for {self.patience} epoch(s) in a row (last: {change:.3g})"
            )
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"previous_J": self.previous_J, "count": self.count}

    def load_state_dict(self, state_dict: dict) -> None:
        count = state_dict.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        self.previous_J, self.count = _number_or_none(state_dict, "previous_J"), count


def _number_or_none(state: dict, key: str) -> float | None:
    """``state[key]``, a number or None (a saved callback state); ``ValueError`` if it is not."""
    if key not in state:
        raise ValueError(f"{key} is missing")
    value = state[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{key} must be a number or None, got {type(value).__name__}")
    return value
