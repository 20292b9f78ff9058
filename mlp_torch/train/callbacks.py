"""The notes' learning-rate practice as Lightning callbacks, for each member of a run.

* J must fall: when the epoch's training J rises, :class:`LearningRateDiagnostics` warns (console
  and TensorBoard) that the learning rate may be too large, naming both values of J and the rate.
* A non-finite J stops training at once (:class:`NonFiniteObjectiveError`), naming the update and
  the rate; the checkpoints already written are kept. In a sweep the member is stopped instead, at
  its weights from before that epoch, and reported; the error comes when every member has.
* Convergence: :class:`ConvergenceStop` stops when the change in training J between epochs stays
  below a threshold (1e-3 by default) for ``patience`` epochs, and says so (in a sweep: that
  member stops, the others train on).
* Saturation: when training ends with the output sigmoids saturated at chance accuracy,
  :class:`LearningRateDiagnostics` says so (a flat J there is not convergence).

Both read ``pl_module.epoch_stats`` (one value per member), which
:class:`mlp_torch.train.module.MLPModule` fills each epoch, stop a member with its
``stop_member``, and log through its ``log_epoch`` (one call per epoch for all names). A callback's
state is that of one member, as ``fit`` saves it, or ``{"members": [...]}`` of K.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["Convergence", "ConvergenceStop", "LearningRateDiagnostics", "NonFiniteObjectiveError"]

log = logging.getLogger(__name__)  # one plain line on stderr by default

SATURATED = 0.01  # an output sigmoid within this of 0 or 1 is saturated: f'(z) < 0.01
SATURATED_SHARE = 0.9  # the saturation warning needs this share of all outputs saturated


class NonFiniteObjectiveError(RuntimeError):
    """Training J became NaN or infinite."""


def _member_states(state: dict, n_members: int) -> list[dict]:
    """A saved callback state as one state per member."""
    states = state.get("members", [state]) if isinstance(state, dict) else None
    if (
        not isinstance(states, list)
        or len(states) != n_members
        or not all(isinstance(s, dict) for s in states)
    ):
        found = len(states) if isinstance(states, list) else "no"
        raise ValueError(f"it holds the state of {found} members, this run has {n_members}")
    return states


def _saved(states: list[dict]) -> dict:
    return states[0] if len(states) == 1 else {"members": states}


class LearningRateDiagnostics(Callback):
    """Warn when the epoch's training J rises; stop with an error when it is not finite.

    Args:
        warn_on_increase: warn when J rises by more than ``rise_tolerance`` (relative).
        rise_tolerance: relative rise ignored as noise (0: any rise warns, as the notes say).
        max_printed: rises printed on the console; later ones are only counted (``increases``,
            ``largest_rise``) and logged to TensorBoard. With mini-batches J wobbles by a few
            percent from epoch to epoch once training has levelled off, and a long run would
            otherwise print a line for a third or more of its epochs. A sweep prints none (its
            table counts them; each member's TensorBoard run has them).
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
        self._members(1)

    def _members(self, n: int) -> None:
        self.previous_Js: list[float | None] = [None] * n
        self.member_increases: list[list[str]] = [[] for _ in range(n)]
        self.largest_rises = [0.0] * n  # the largest relative rise, (J - previous J) / previous J

    @property
    def previous_J(self) -> float | None:
        """The last epoch's training J (the first member's, in a sweep)."""
        return self.previous_Js[0]

    @property
    def increases(self) -> list[str]:
        """The J rises of the run (its first member's, in a sweep)."""
        return self.member_increases[0]

    @property
    def largest_rise(self) -> float:
        return self.largest_rises[0]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if len(self.previous_Js) != pl_module.n_members:
            self._members(pl_module.n_members)

    def _check_J(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stats, K = pl_module.epoch_stats, pl_module.n_members
        rose = [0.0] * K
        for k in range(K):
            if pl_module.status[k].stopped:
                continue
            J, lr, bad = stats["J"][k], stats["lr"][k], stats["first_nonfinite_update"][k]
            if bad >= 0 or not math.isfinite(J):
                self._nonfinite(trainer, pl_module, k, max(bad, 0), lr)
                continue
            prev, self.previous_Js[k] = self.previous_Js[k], J
            if self.warn_on_increase and prev is not None and J > prev * (1 + self.rise_tolerance):
                self._rose(trainer, pl_module, k, prev, J, lr)
            rose[k] = float(prev is not None and J > prev)
        pl_module.log_epoch({"diagnostics/J_rose": rose})

    def _nonfinite(
        self, trainer: Trainer, pl_module: LightningModule, k: int, update: int, lr: float
    ) -> None:
        stats, epoch = pl_module.epoch_stats, trainer.current_epoch
        if pl_module.n_members == 1:
            total = trainer.global_step - stats["updates"] + update + 1
            ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
            kept = f"; the last good checkpoint is {ckpt}" if ckpt else ""
            raise NonFiniteObjectiveError(
                f"training J became non-finite at update {total} (epoch {epoch}, update {update + 1} of "
                f"{stats['updates']}) with learning rate {lr:g}: the rate is far too large, lower it "
                f"(e.g. --model.optimizer.lr {lr / 10:g}){kept}"
            )
        why = (
            f"training J became non-finite in epoch {epoch} (update {update + 1} of {stats['updates']}) "
            f"with learning rate {lr:g}; kept the weights from before that epoch"
        )
        pl_module.stop_member(k, "diverged", why)
        if all(status.stopped == "diverged" for status in pl_module.status):
            raise NonFiniteObjectiveError(
                f"every member's training J became non-finite (the last in epoch {epoch}): the rates are "
                "far too large, lower them"
            )

    def _rose(
        self, trainer: Trainer, pl_module: LightningModule, k: int, prev: float, J: float, lr: float
    ) -> None:
        epoch = trainer.current_epoch
        msg = (
            f"epoch {epoch}: training J rose from {prev:.6g} to {J:.6g} with learning rate {lr:g}; "
            f"the learning rate may be too large"
        )
        increases = self.member_increases[k]
        increases.append(msg)
        self.largest_rises[k] = max(self.largest_rises[k], (J - prev) / prev if prev > 0 else math.inf)
        if pl_module.n_members == 1:
            if len(increases) <= self.max_printed:
                rank_zero_only(log.warning)(msg)
            elif len(increases) == self.max_printed + 1:
                rank_zero_only(log.warning)(
                    f"epoch {epoch}: training J rose again; further rises are not printed: the summary "
                    "counts them and TensorBoard logs each one (diagnostics/J_rose)"
                )
        events = pl_module.events[k] if k < len(pl_module.events) else None
        if events is not None:
            events.text("diagnostics/J_rose", msg, epoch)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, *args) -> None:
        self._check_J(trainer, pl_module)
        self._last_batch = batch  # the whole training split; looked at once, when training ends

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn when the output sigmoids are saturated and the network is no better than chance:
        ``f'(z)`` is then ~0, the gradient vanishes and J stops changing without converging."""
        batch = getattr(self, "_last_batch", None)
        if not self.warn_on_saturation or batch is None:
            return
        x, y = batch[0], batch[1]  # (N, n_in) or (K, N, n_in); (N, n_out) or (K, N, n_out)
        with torch.no_grad():
            a = pl_module(x)  # (N, n_out) or (K, N, n_out)
        K = pl_module.n_members
        for k in range(K):
            ak = a if K == 1 else a[k]
            yk = y if y.dim() == 2 else y[k]
            self._saturation(pl_module, k, ak, yk)

    def _saturation(self, pl_module: LightningModule, k: int, a, y) -> None:
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
        lrs = pl_module.epoch_stats.get("lr") or [float("nan")] * pl_module.n_members
        member = f"member {pl_module.names[k]}: " if pl_module.n_members > 1 else ""
        rank_zero_only(log.warning)(
            f"{member}the outputs are saturated: {saturated:.0%} of the output sigmoids are within "
            f"{SATURATED:g} of 0 or 1 and {why}; there f'(z) ~ 0, the gradient vanishes and J stops changing "
            f"without converging. Lower the learning rate (it was {lrs[k]:g}), or use --model.cost "
            "cross_entropy"
        )

    def state_dict(self) -> dict:
        return _saved([
            {"previous_J": prev, "increases": list(rises), "largest_rise": largest}
            for prev, rises, largest in zip(self.previous_Js, self.member_increases, self.largest_rises)
        ])  # fmt: skip

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed run counts the J rises of the whole run, not only of the resumed part."""
        states = _member_states(state_dict, len(self.previous_Js))
        previous, increases, largest = [], [], []
        for state in states:
            rises = state.get("increases", [])
            if not isinstance(rises, list) or not all(isinstance(m, str) for m in rises):
                raise ValueError(f"increases must be a list of messages, got {type(rises).__name__}")
            previous.append(_number_or_none(state, "previous_J"))
            increases.append(list(rises))
            largest.append(_number_or_none({"largest_rise": 0.0, **state}, "largest_rise"))
        self.previous_Js, self.member_increases, self.largest_rises = previous, increases, largest


@dataclass
class Convergence:
    """One member's convergence stop (see :class:`ConvergenceStop`)."""

    threshold: float = 1e-3
    patience: int = 3
    enabled: bool = True


class ConvergenceStop(Callback):
    """Stop when ``|J(epoch) - J(epoch - 1)| < threshold`` for ``patience`` epochs in a row.

    Args:
        threshold: the change in training J counted as no change (the notes: 1e-3).
        patience: consecutive epochs below the threshold before stopping.
        enabled: ``False`` turns the stop off (train for ``max_epochs``).

    In a sweep each member has its own settings (:meth:`for_members`) and stops alone.
    """

    def __init__(self, threshold: float = 1e-3, patience: int = 3, enabled: bool = True) -> None:
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold={threshold!r} must be a finite number >= 0")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience={patience!r} must be an integer >= 1")
        self.threshold, self.patience, self.enabled = threshold, patience, enabled
        self.for_members([Convergence(threshold, patience, enabled)])

    def for_members(self, settings: list[Convergence]) -> ConvergenceStop:
        """Each member's own stop (one entry per member)."""
        self.settings = list(settings)
        self.previous_Js: list[float | None] = [None] * len(settings)
        self.counts = [0] * len(settings)
        self.reasons: list[str | None] = [None] * len(settings)
        return self

    @property
    def previous_J(self) -> float | None:
        return self.previous_Js[0]

    @property
    def count(self) -> int:
        return self.counts[0]

    @property
    def reason(self) -> str | None:
        """Why the run stopped (its first member, in a sweep); ``None`` if it did not converge."""
        return self.reasons[0]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if len(self.settings) != pl_module.n_members:
            self.for_members([self.settings[0]] * pl_module.n_members)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        Js = pl_module.epoch_stats.get("J")
        if Js is None:
            return
        for k, (J, rule) in enumerate(zip(Js, self.settings)):
            if pl_module.status[k].stopped:
                continue
            prev, self.previous_Js[k] = self.previous_Js[k], J
            if prev is None or not rule.enabled or not math.isfinite(J):
                continue
            change = abs(J - prev)
            self.counts[k] = self.counts[k] + 1 if change < rule.threshold else 0
            if self.counts[k] >= rule.patience:
                self.reasons[k] = (
                    f"converged at epoch {trainer.current_epoch}: the change in training J was below "
                    f"{rule.threshold:g} for {rule.patience} epoch(s) in a row (last: {change:.3g})"
                )
                pl_module.stop_member(k, "converged", self.reasons[k])

    def state_dict(self) -> dict:
        return _saved([{"previous_J": p, "count": c} for p, c in zip(self.previous_Js, self.counts)])

    def load_state_dict(self, state_dict: dict) -> None:
        states = _member_states(state_dict, len(self.settings))
        previous, counts = [], []
        for state in states:
            count = state.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"count must be an integer >= 0, got {count!r}")
            previous.append(_number_or_none(state, "previous_J"))
            counts.append(count)
        self.previous_Js, self.counts = previous, counts


def _number_or_none(state: dict, key: str) -> float | None:
    """``state[key]``, a number or None (a saved callback state); ``ValueError`` if it is not."""
    if key not in state:
        raise ValueError(f"{key} is missing")
    value = state[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{key} must be a number or None, got {type(value).__name__}")
    return value


class History(Callback):
    """The figures each epoch logs (``train/J``, ``val/J``, ``val/acc`` or ``val/mse``, ...), kept in
    memory: ``history["epoch"]`` and one list per name, as :func:`mlp_torch.fit` returns them to
    plot J from Python. Names are the scalars without a member suffix; only the first member's."""

    NAMES = ("train/J", "val/J", "val/acc", "val/mse", "lr")

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"epoch": []}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.history["epoch"].append(trainer.current_epoch)
        for name in self.NAMES:
            if name in metrics:
                self.history.setdefault(name, []).append(float(metrics[name]))
