"""The sweep's training system: a LightningModule that trains K settings in lockstep, as one
:class:`~mlp_torch.stacked.StackedMLP`, with the very backprop and optimizers of a single run.

Each member is given as the :class:`~mlp_torch.module.MLPModule` that ``mlp-torch fit`` would
train for its setting, and follows that run update for update: its own starting weights (``init``,
``bias_init``, ``seed``), its own shuffle order (:func:`~mlp_torch.data.epoch_permutation` of its
seed), its own ``lr``, ``alpha``, ``l1``, ``l2`` (``(K,)`` tensors where members differ), its own
data split where the data settings differ (same split sizes), its own convergence stop, and its own
best epoch (lowest ``val/J``, the checkpoint ``fit`` would test). What members must share: layer
sizes, batch size, cost, reduction, dtype, the optimizer's class and the epochs.

Like :class:`MLPModule`, each Lightning training step is a whole epoch of updates. A member whose
training J becomes non-finite is frozen at the weights it had before that epoch (the last
checkpoint ``fit`` would keep) and reported; one whose J stops changing is frozen where ``fit``'s
:class:`~mlp_torch.callbacks.ConvergenceStop` would stop it. Frozen members take no more steps
(their gradients and momentum are zeroed) while the others train on; training ends when all are
frozen or at ``max_epochs``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from mlp_torch.data import from_unit_range
from mlp_torch.model.backprop import output_terms
from mlp_torch.model.costs import COSTS, is_off, l1_grad
from mlp_torch.model.fused import fused_backprop
from mlp_torch.model.network import feedforward, per_member
from mlp_torch.model.optim import GradientDescent, HeavyBall, Momentum, _add_scaled
from mlp_torch.model.stacked import StackedMLP
from mlp_torch.train.events import ScalarEvents
from mlp_torch.train.loop import epoch_permutation
from mlp_torch.train.module import DEFAULT_ALPHA, DEFAULT_LR, MLPModule
from mlp_torch.train.threads import choose_num_threads, largest_product, use_threads

__all__ = ["Convergence", "MemberStatus", "SweepModule"]

# What members must share, as MLPModule hyper-parameters (the rest may differ per member).
SHARED = (
    "n_inputs",
    "hidden_sizes",
    "cost",
    "reduction",
    "batch_size",
    "chunk_size",
    "task",
    "dtype",
    "grad_source",
    "n_outputs",
    "num_threads",
)
PER_MEMBER_OPTIMIZERS = (GradientDescent, Momentum, HeavyBall)  # take (K,) lr and alpha tensors


@dataclass
class Convergence:
    """A member's :class:`~mlp_torch.callbacks.ConvergenceStop` settings."""

    threshold: float = 1e-3
    patience: int = 3
    enabled: bool = True


@dataclass
class MemberStatus:
    """Where a member stands: its epochs, its best epoch and why it stopped."""

    epochs: int = 0  # epochs trained
    stopped: str = ""  # "" while training; then "converged", "diverged" or "max_epochs"
    why: str = ""  # a sentence saying why it stopped
    best_epoch: int = -1  # the epoch of the lowest val/J (-1: never validated)
    best: dict[str, float] = field(default_factory=dict)  # val/J and the val metric at best_epoch
    last: dict[str, float] = field(default_factory=dict)  # the last epoch's train/ and val/ figures
    previous_J: float | None = None  # the convergence stop's memory
    count: int = 0


def _shared(modules: Sequence[MLPModule], names: Sequence[str], key: str):
    values = [m.hparams[key] for m in modules]
    for name, value in zip(names[1:], values[1:]):
        if value != values[0]:
            raise ValueError(
                f"model.{key} is {values[0]!r} in member {names[0]} but {value!r} in member {name}: "
                "the members of a sweep must share it (sweep over it in separate sweeps)"
            )
    return values[0]


def _optimizer_settings(modules: Sequence[MLPModule], names: Sequence[str]):
    """``(factory, per_member)``: a ``params -> Optimizer`` for the stacked parameters and the
    settings that differ between members, ``{name: [value per member]}``."""
    factories = [
        m.optimizer_factory or functools.partial(Momentum, lr=DEFAULT_LR, alpha=DEFAULT_ALPHA)
        for m in modules
    ]
    built = [f(m.net.parameters()) for f, m in zip(factories, modules)]
    cls = type(built[0])
    for name, opt in zip(names, built):
        if type(opt) is not cls:
            raise ValueError(
                f"member {name} uses {type(opt).__name__}, member {names[0]} {cls.__name__}: the members "
                "of a sweep must share the optimizer's class"
            )
    keys = sorted(built[0].defaults)
    differ = {k: [opt.defaults[k] for opt in built] for k in keys}
    differ = {k: v for k, v in differ.items() if any(x != v[0] for x in v)}
    if differ and (cls not in PER_MEMBER_OPTIMIZERS or not set(differ) <= {"lr", "alpha"}):
        raise ValueError(
            f"the members' {cls.__name__} settings differ in {sorted(differ)}: a sweep varies only lr and "
            f"alpha of {', '.join(c.__name__ for c in PER_MEMBER_OPTIMIZERS)} (mlp_torch.optim)"
        )
    if not differ:
        return factories[0], {}
    shared = {k: v for k, v in built[0].defaults.items() if k not in differ}
    return functools.partial(cls, **shared), differ


class SweepModule(L.LightningModule):
    """Train ``K`` settings of :class:`MLPModule` at once, one stacked network.

    Args:
        modules: each member's ``MLPModule``, as ``mlp-torch fit`` would build it for its setting
            (only its hyper-parameters, starting network and optimizer factory are read).
        names: each member's name (its TensorBoard run), e.g. ``"lr=0.3,seed=0"``.
        convergence: each member's convergence stop; ``None``: the defaults for all.
        loggers: one TensorBoard logger per member, or ``None`` to log nothing.

    After (or during) training, :attr:`status` holds each member's :class:`MemberStatus`,
    :attr:`best_state` each member's weights at its best epoch (``SigmoidMLP`` state dicts).
    """

    def __init__(
        self,
        modules: Sequence[MLPModule],
        names: Sequence[str],
        convergence: Sequence[Convergence] | None = None,
        loggers: Sequence | None = None,
    ) -> None:
        super().__init__()
        if len(modules) != len(names) or not modules:
            raise ValueError(f"{len(modules)} modules but {len(names)} names: give one name per member")
        if len(set(names)) != len(names):
            raise ValueError(f"member names must differ, got {list(names)}")
        self.names = list(names)
        self.shared = {key: _shared(modules, self.names, key) for key in SHARED}
        for m, name in zip(modules, self.names):
            if m.hparams.crosscheck_every_n_steps:
                raise ValueError(f"member {name}: a sweep does not cross-check gradients; set "
                                 "model.crosscheck_every_n_steps 0 (use mlp-torch fit for that)")  # fmt: skip
            if m.scheduler_factory is not None:
                raise ValueError(f"member {name}: a sweep keeps each member's rate constant; remove "
                                 "model.lr_scheduler (use mlp-torch fit for schedules)")  # fmt: skip
        self.optimizer_factory, self.optimizer_per_member = _optimizer_settings(modules, self.names)
        self.net = StackedMLP([m.net for m in modules])
        self.seeds = [m.hparams.seed for m in modules]
        self.settings = {key: [float(m.hparams[key]) for m in modules] for key in ("l1", "l2")}
        self.target_range = [(m.hparams.target_low, m.hparams.target_high) for m in modules]
        self.convergence = list(convergence) if convergence is not None else [Convergence() for _ in modules]
        self.member_loggers = list(loggers) if loggers is not None else None
        # each epoch's scalars: written here, not through each logger's writer thread (see events.py)
        self.member_events = [ScalarEvents(lg.log_dir) for lg in loggers] if loggers is not None else None
        self.status = [MemberStatus() for _ in modules]
        self.best_params: list[Tensor] | None = None  # each member's weights at its best epoch, stacked
        self.automatic_optimization = False

    @property
    def n_members(self) -> int:
        return self.net.n_members

    def _per_member(self, values: Sequence[float]) -> float | Tensor:
        """One number if all members share it, else a ``(K,)`` tensor on the network's device."""
        if all(v == values[0] for v in values):
            return float(values[0])
        return torch.tensor(values, dtype=self.net.W[0].dtype, device=self.device)

    @property
    def best_state(self) -> list[dict[str, Tensor]]:
        """Each member's weights at its best epoch (its starting weights before any validation),
        as ``SigmoidMLP`` state dicts."""
        params = self.best_params or [p.detach() for p in self.net.parameters()]
        L_ = len(self.net.W)
        return [
            {f"layers.{i}.{kind}": params[i + j * L_][k].clone() for j, kind in enumerate(("weight", "bias"))
             for i in range(L_)}
            for k in range(self.n_members)
        ]  # fmt: skip

    def on_fit_start(self) -> None:
        self.active = torch.tensor([not s.stopped for s in self.status], device=self.device)  # (K,)
        self.validated = torch.zeros_like(self.active)  # (K,): has a best epoch
        self.best_J = torch.full(self.active.shape, math.inf, dtype=self.net.W[0].dtype, device=self.device)
        self.best_params = [p.detach().clone() for p in self.net.parameters()]
        self.l1, self.l2 = (self._per_member(self.settings[k]) for k in ("l1", "l2"))

    # ---- training -------------------------------------------------------------------------

    def _shuffled(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The training split in each member's order of this epoch: ``(N, n)`` when all members
        share one order and one split (layer 1 is then one product for all), else ``(K, N, n)``."""
        N, epoch = x.shape[-2], self.current_epoch
        orders = {s: epoch_permutation(N, s, epoch, device=x.device) for s in set(self.seeds)}
        if len(orders) == 1 and x.dim() == 2:
            order = orders[self.seeds[0]]  # (N,)
            return x[order], y[order]
        order = torch.stack([orders[s] for s in self.seeds])  # (K, N)
        if x.dim() == 2:
            return x[order], y[order]  # (K, N, n)
        members = torch.arange(self.n_members, device=x.device)[:, None]  # (K, 1)
        return x[members, order], y[members, order]

    def _data_gradient(self, x: Tensor, y: Tensor, scale: float, grads: list[Tensor], z_out: Tensor) -> None:
        """The gradient of each member's ``scale * sum_i C_i`` into ``grads`` (ordered as
        ``net.parameters()``), each example's ``z_L`` into ``z_out`` ``(K, n, n_out)``."""
        weights, biases, cost = self.net.weights, self.net.biases, self.shared["cost"]
        L_ = len(weights)
        if self.shared["grad_source"] == "manual":
            fused_backprop(weights, biases, x, y, grads[:L_], grads[L_:], cost=cost, scale=scale, z_out=z_out)
            return
        with torch.enable_grad():  # members are independent: the sum's gradient is each one's
            zs, activations = feedforward(weights, biases, x)
            data = scale * COSTS[cost].fn(zs[-1], activations[-1], y).sum()
            torch._foreach_copy_(grads, torch.autograd.grad(data, [*weights, *biases]))
        z_out.copy_(zs[-1])

    def _batch_gradient(self, x: Tensor, y: Tensor, scale: float, chunk: int, z_out: Tensor) -> None:
        """Each member's ``dJ/dp`` on the batch ``(x, y)`` into ``self.grads``: the cost's gradient
        summed over chunks of ``chunk`` examples, then the penalties' gradient, once."""
        n = x.shape[-2]
        part = self.grads if chunk >= n else [torch.empty_like(g) for g in self.grads]
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            into = self.grads if start == 0 else part
            self._data_gradient(x[..., rows, :], y[..., rows, :], scale, into, z_out[:, rows])
            if start:
                torch._foreach_add_(self.grads, part)
        for W, g in zip(self.net.weights, self.grads):
            if not is_off(self.l1):
                g.add_(l1_grad(W, self.l1))
            if not is_off(self.l2):
                _add_scaled(g, W, 2 * per_member(self.l2, W))  # + l2_grad(W) = 2 l2 W, in one op

    def _mask(self, p: Tensor) -> Tensor:
        """The active members, ``(K, 1, ...)`` to broadcast over ``p``."""
        return self.active.view(-1, *([1] * (p.dim() - 1)))

    def _penalty_sums(self, out: Tensor) -> None:
        """Each member's ``sum |w|`` and ``sum w^2`` over all its weights into ``out`` ``(2, K)``
        (when that penalty is on)."""
        flat = [W.flatten(1) for W in self.net.weights]  # (K, out * in) views
        if not is_off(self.l1):  # (abs, then sum: several times faster than vector_norm's ord 1)
            torch.sum(torch.stack([w.abs().sum(1) for w in flat]), 0, out=out[0])
        if not is_off(self.l2):  # (the 2-norm, squared: several times faster than vecdot)
            torch.sum(
                torch.stack([torch.linalg.vector_norm(w, dim=1) for w in flat]).square_(), 0, out=out[1]
            )

    def _set_threads(self, rows: int) -> None:
        """Intra-op threads by :func:`mlp_torch.threads.choose_num_threads` for all the members'
        work (or the members' shared ``num_threads``); logged once."""
        threads = self.shared["num_threads"] or choose_num_threads(
            self.net.sizes, rows, members=self.n_members
        )
        product = largest_product(self.net.sizes, rows, self.n_members)
        line = use_threads(threads, product, bool(self.shared["num_threads"]), " for all members")
        if getattr(self, "_threads_logged", None) != threads:
            self._threads_logged = threads
            rank_zero_info(line)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch  # the training split, (N, n_in) shared or (K, N, n_in) one per member
        N, K = x.shape[-2], self.n_members
        full = self.shared["batch_size"] == "full"
        size = N if full else min(self.shared["batch_size"], N)
        chunk = self.shared["chunk_size"] or size
        self._set_threads(min(size, chunk))
        xs, ys = (x, y) if full else self._shuffled(x, y)
        params = list(self.net.parameters())
        self.grads = [torch.zeros_like(p) for p in params] if not hasattr(self, "grads") else self.grads
        for p, g in zip(params, self.grads):
            p.grad = g
        self.all_active = bool(self.active.all())
        before = [p.detach().clone() for p in params]  # a diverging member returns here
        z_out = x.new_empty(K, N, y.shape[-1])  # (K, N, n_out): each example's z_L at its update
        starts = range(0, N, size)
        sums = x.new_zeros(len(starts), 2, K)  # sum |w| and sum w^2 at each update's weights
        opt = self.optimizers(use_pl_optimizer=False)
        step = getattr(opt, "update", opt.step)  # mlp_torch.optim's update: no hooks, no profiler record
        mean = self.shared["reduction"] == "mean"
        with torch.no_grad():
            for k, start in enumerate(starts):
                rows = slice(start, start + size)
                xb, yb = xs[..., rows, :], ys[..., rows, :]
                self._penalty_sums(sums[k])
                self._batch_gradient(xb, yb, 1.0 / xb.shape[-2] if mean else 1.0, chunk, z_out[:, rows])
                if not self.all_active and not self.frozen_by_lr:
                    for p, g in zip(params, self.grads):
                        g.masked_fill_(~self._mask(p), 0.0)  # frozen members take no step
                step()
            self.train_terms, js = self._epoch_objective(z_out, ys, size, sums)
        finite = torch.isfinite(js)  # (K, updates)
        diverged = self.active & ~finite.all(1)
        if bool(diverged.any()):
            first_bad = (~finite).int().argmax(1).tolist()  # each member's first non-finite update
            for k in diverged.nonzero().flatten().tolist():
                self._diverged(k, first_bad[k] + 1, len(starts), opt, before)

    def _epoch_objective(self, z: Tensor, y: Tensor, size: int, sums: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's epoch ``(J, cost, l1, l2)`` ``(4, K)`` (as :class:`MLPModule` logs them)
        and the ``J`` of each update ``(K, updates)``, from each example's ``z_L`` ``(K, N, n_out)``
        and the penalties' sums ``(updates, 2, K)``."""
        N = z.shape[1]
        costs = COSTS[self.shared["cost"]].fn(z, torch.sigmoid(z), y)  # (K, N): C_i where used
        which = torch.arange(N, device=z.device) // size  # (N,): the update each example fed
        per_update = costs.new_zeros(z.shape[0], sums.shape[0]).index_add_(1, which, costs)  # (K, U)
        mean = self.shared["reduction"] == "mean"
        if mean:
            per_update = per_update / torch.bincount(which)
        weights = [self.l1, self.l2]
        weights = [w[:, None] if isinstance(w, Tensor) else w for w in weights]
        penalties = torch.stack([sums[:, 0].T * weights[0], sums[:, 1].T * weights[1]])  # (2, K, U)
        cost = costs.sum(1) / N if mean else costs.sum(1)  # (K,)
        l1, l2 = penalties.mean(dim=2)  # (K,) each
        return torch.stack((cost + l1 + l2, cost, l1, l2)), per_update + penalties.sum(0)

    def _diverged(self, k: int, update: int, updates: int, opt, before: list[Tensor]) -> None:
        with torch.no_grad():
            for p, p0 in zip(self.net.parameters(), before):
                p[k] = p0[k]
        lr = self.optimizer_per_member.get("lr", [opt.defaults.get("lr", float("nan"))] * self.n_members)[k]
        why = (
            f"training J became non-finite in epoch {self.current_epoch} (update {update} of {updates}) "
            f"with learning rate {lr:g}; kept the weights from before that epoch"
        )
        self._freeze(k, opt, "diverged", why)

    def _freeze(self, k: int, opt, stopped: str, why: str) -> None:
        """Member ``k`` takes no more steps: its momentum is zeroed and its learning rate set to 0
        (with an optimizer of :data:`PER_MEMBER_OPTIMIZERS`, a step of ``0 * g`` is exactly none
        while ``g`` is finite); once any member has diverged, or with any other optimizer, the
        frozen members' gradients are masked out instead (more operations per update)."""
        if stopped == "diverged":
            self.frozen_by_lr = False  # its gradient may not stay finite: mask from now on
        self.active[k] = False
        self.all_active = False
        for state in opt.state.values():
            for t in state.values():
                if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == self.n_members:
                    t[k] = 0
        if self.frozen_by_lr:
            for group in opt.param_groups:
                if not isinstance(group["lr"], Tensor):
                    group["lr"] = torch.full_like(self.best_J, group["lr"])  # (K,)
                group["lr"][k] = 0.0
        self.status[k].stopped, self.status[k].why = stopped, why
        self.status[k].epochs = self.current_epoch + (stopped != "diverged")

    # ---- evaluation -----------------------------------------------------------------------

    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``{"J": (K,), "acc" or "mse": (K,)}`` of every member on one split, ``x`` ``(n, n_in)``
        or ``(K, n, n_in)`` (mse in each member's target units)."""
        scale = 1.0 / x.shape[-2] if self.shared["reduction"] == "mean" else 1.0
        kw = dict(cost=self.shared["cost"], l1=self.l1, l2=self.l2, scale=scale)
        zs, activations = self.net.forward_pass(x)
        y_hat = activations[-1]  # (K, n, n_out)
        J = output_terms(self.net.weights, zs[-1], y_hat, y, **kw)["J"]  # (K,)
        if self.shared["task"] == "classification":
            return {"J": J, "acc": (y_hat.argmax(-1) == y.argmax(-1)).to(x.dtype).mean(-1)}
        low, high = (
            torch.tensor(r, dtype=x.dtype, device=x.device)[:, None, :] for r in zip(*self.target_range)
        )
        error = from_unit_range(y_hat, low, high) - from_unit_range(y, low, high)  # (K, n, n_out)
        return {"J": J, "mse": (error**2).flatten(1).mean(-1)}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Each active member's val figures; a lower ``val/J`` than ever makes this its best epoch
        (``fit``'s best checkpoint)."""
        figures = self.evaluate(*batch)
        # an active member's first val/J, or one lower than its best so far (NaN never is)
        better = self.active & (~self.validated | (figures["J"] < self.best_J))  # (K,)
        self.validated |= better
        torch.where(better, figures["J"], self.best_J, out=self.best_J)
        for p, best in zip(self.net.parameters(), self.best_params):
            torch.where(better.view(-1, *([1] * (p.dim() - 1))), p.detach(), best, out=best)
        val = {k: v.tolist() for k, v in figures.items()}
        self.val_figures = val
        for k in better.nonzero().flatten().tolist():
            self.status[k].best_epoch = self.current_epoch
            self.status[k].best = {f"val/{name}": v[k] for name, v in val.items()}

    def on_validation_epoch_start(self) -> None:
        self.val_figures = {}

    def on_train_epoch_end(self) -> None:
        """Log each active member's epoch, then stop those that converged (as ConvergenceStop)."""
        train = dict(zip(("J", "cost", "l1", "l2"), self.train_terms.tolist()))
        opt = self.optimizers()
        lrs = self.optimizer_per_member.get("lr", [opt.defaults.get("lr")] * self.n_members)
        for k, status in enumerate(self.status):
            if status.stopped:
                continue
            status.epochs = self.current_epoch + 1
            status.last = {f"train/{name}": v[k] for name, v in train.items()}
            status.last.update({f"val/{name}": v[k] for name, v in getattr(self, "val_figures", {}).items()})
            if self.member_events is not None:
                metrics = {**status.last, "epoch": self.current_epoch}
                if isinstance(lrs[k], (int, float)):
                    metrics["lr"] = lrs[k]
                self.member_events[k].add(metrics, step=self.current_epoch)
            self._convergence(k, train["J"][k], opt)
        for events in self.member_events or []:
            events.flush()
        if not bool(self.active.any()):
            self.trainer.should_stop = True

    def _convergence(self, k: int, J: float, opt) -> None:
        status, rule = self.status[k], self.convergence[k]
        prev, status.previous_J = status.previous_J, J
        if prev is None or not rule.enabled or not math.isfinite(J):
            return
        change = abs(J - prev)
        status.count = status.count + 1 if change < rule.threshold else 0
        if status.count >= rule.patience:
            why = (
                f"converged at epoch {self.current_epoch}: the change in training J was below "
                f"{rule.threshold:g} for {rule.patience} epoch(s) in a row (last: {change:.3g})"
            )
            self._freeze(k, opt, "converged", why)

    def on_train_end(self) -> None:
        for events in self.member_events or []:
            events.close()
        for status in self.status:
            if not status.stopped:
                status.stopped, status.why = "max_epochs", f"reached max_epochs={self.trainer.max_epochs}"

    def configure_optimizers(self):
        settings = {k: self._per_member(v) for k, v in self.optimizer_per_member.items()}
        optimizer = self.optimizer_factory(self.net.parameters(), **settings)
        self.frozen_by_lr = isinstance(optimizer, PER_MEMBER_OPTIMIZERS)
        return optimizer
