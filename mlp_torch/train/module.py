"""The training system: one LightningModule that trains K >= 1 sigmoid MLPs by the notes' rules.

``mlp-torch fit`` trains one member (K = 1); ``mlp-torch sweep`` trains K members at once, one per
setting of a grid (:meth:`MLPModule.of_members`), and each member follows, update for update, the
run ``fit`` would train for its setting: its own starting weights (``init``, ``bias_init``,
``seed``), its own shuffle order, its own ``lr``, ``alpha``, ``l1``, ``l2``, learning-rate schedule
and convergence stop, its own data split where the data settings differ (same split sizes). What
members share: layer sizes, batch size, cost, reduction, dtype, the gradient source and the
cross-check's settings, the optimizer's and the scheduler's class, the epochs.

Manual optimization. Each Lightning training step is one epoch: the data module hands over the
whole training split (already on the device) and the step runs every update of the epoch in a
tight loop, so Lightning's per-step overhead and logging are paid once per epoch, not per update.
The members' parameters are views of one flat tensor, ``(P,)`` for one member (all operations
2-D, as for a single network) and ``(K, P)`` for K (batched products, per-member settings as
``(K,)`` tensors), updated by one optimizer step (:class:`mlp_torch.train.loop.FlatParameters`).

The notes' three regimes, chosen by ``batch_size``:

* ``"full"``: batch gradient descent, one update per epoch with the gradient over all ``N``
  training examples. With ``chunk_size`` the set is fed in chunks: each chunk's cost gradient is
  summed with weight ``s`` (``1/N`` for ``reduction="mean"``, 1 for ``"sum"``) and the penalty
  gradient is added once, so the update equals the single full-batch step to float tolerance.
* ``1``: stochastic gradient descent, one update per example, reshuffled each epoch.
* ``b > 1``: mini-batch, one update per ``b`` examples (the last batch may be smaller).

The shuffle order of epoch ``e`` is :func:`mlp_torch.train.loop.epoch_permutation` of ``(seed, e)``,
so a resumed run sees the order an uninterrupted one would.

Data parallel (``--trainer.strategy ddp``, ``W`` processes): every rank gets the whole split and
computes only its shard of each update's batch, for every member (:mod:`mlp_torch.train.distributed`);
the ranks' cost gradients are summed by one ``all_reduce`` per update for all members and the
penalties' gradient is added once after it, so the update is the one-process update of the same
global batch (``batch_size`` is the global batch). The epoch's metrics are reduced over the ranks;
a cross-check compares each rank's two gradients of its shard and logs the largest error over the
ranks.

What is logged as ``train/J`` (and ``train/cost``, ``train/l1``, ``train/l2``): each example's
cost at the weights it was used with, reduced over the whole training split as ``reduction``
says, plus the penalties averaged over the epoch's updates. For batch gradient descent it is
exactly ``J`` before the epoch's update.

A member stops as its ``fit`` would: at its convergence stop (it is frozen: no more steps), or
when its J becomes non-finite (``fit`` ends with an error; a member of a sweep is frozen at its
weights from before that epoch and reported, and the others train on). Training ends when every
member has stopped, or at ``max_epochs``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from mlp_torch.data import DTYPES, from_unit_range
from mlp_torch.model.backprop import check_objective_args, output_terms
from mlp_torch.model.gradcheck import TOLERANCES, relative_error
from mlp_torch.model.network import SigmoidMLP, StackedMLP, feedforward
from mlp_torch.model.optim import GradientDescent, HeavyBall, Momentum
from mlp_torch.train import loop
from mlp_torch.train.distributed import max_over_ranks, shard, sum_over_ranks, update_shards
from mlp_torch.train.events import RunEvents
from mlp_torch.train.threads import available_cores, choose_num_threads, largest_product, use_threads

__all__ = ["CrossCheckError", "MLPModule", "MemberStatus", "default_optimizer"]

NEAR_ZERO = 1e-3  # |w| below this counts as "near zero" in the sparsity/ fractions (L1's effect)
# The defaults were chosen by 5-fold cross-validation on the non-test examples (see docs/results.md):
DEFAULT_LR, DEFAULT_ALPHA = 3.0, 0.9  # Momentum's settings when no optimizer is given
DEFAULT_L2 = 1e-4  # weight decay gamma; with lr 3, +0.56 points of held-out accuracy over l2=0, lr 2

# What the members of one module share, as hyper-parameters (the others may differ per member).
SHARED = ("n_inputs", "hidden_sizes", "n_outputs", "task", "cost", "reduction", "batch_size", "chunk_size",
          "grad_source", "crosscheck_every_n_steps", "crosscheck_action", "crosscheck_tolerance", "dtype",
          "histograms_every_n_epochs", "num_threads", "native")  # fmt: skip
PER_MEMBER_RATES = (GradientDescent, Momentum, HeavyBall)  # take (K,) tensors of lr and alpha


class CrossCheckError(RuntimeError):
    """Hand-written and autograd gradients disagree beyond the tolerance during training."""


@dataclass
class MemberStatus:
    """Where a member stands: its epochs, why it stopped, its best epoch (lowest ``val/J``)."""

    epochs: int = 0  # epochs trained
    stopped: str = ""  # "" while training; then "converged", "diverged" or "max_epochs"
    why: str = ""  # a sentence saying why it stopped
    best_epoch: int = -1  # the epoch of the lowest val/J (-1: never validated)
    best: dict[str, float] = field(default_factory=dict)  # val/J and the val metric at best_epoch
    last: dict[str, float] = field(default_factory=dict)  # the last epoch's train/ and val/ figures

    def as_dict(self) -> dict:
        """``dataclasses.asdict(self)`` (its dicts copied), without asdict's deep copy of every
        value: a sweep's checkpoint took 1.2 ms for its 32 members' with it."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: dict(v) if isinstance(v, dict) else v for name, v in values.items()}


def default_optimizer(params) -> torch.optim.Optimizer:
    """What trains when no optimizer is given: the notes' ``Momentum(lr=3, alpha=0.9)``."""
    return Momentum(params, lr=DEFAULT_LR, alpha=DEFAULT_ALPHA)


def _unhooked(opt: torch.optim.Optimizer) -> bool:
    """``opt`` has :meth:`mlp_torch.model.optim._NotesOptimizer.update` and no step hook to run."""
    hooks = (_global_optimizer_pre_hooks, _global_optimizer_post_hooks)
    own = (opt._optimizer_step_pre_hooks, opt._optimizer_step_post_hooks)
    return hasattr(opt, "update") and not any(hooks) and not any(own)


def _positive_int(name: str, value, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


class _MemberRate(torch.optim.Optimizer):
    """A stand-in optimizer holding one member's settings and no parameter of its own, for that
    member's learning-rate scheduler to step (a scheduler of ``torch.optim.lr_scheduler`` needs an
    optimizer, and each member has its own schedule); the module copies the scheduled ``lr``
    into the real optimizer once per epoch."""

    def __init__(self, settings: dict) -> None:
        super().__init__([torch.zeros(())], dict(settings))

    def step(self, closure=None) -> None:
        return None


def _shared(modules: Sequence[MLPModule], names: Sequence[str], key: str):
    values = [m.hparams[key] for m in modules]
    for name, value in zip(names[1:], values[1:]):
        if value != values[0]:
            raise ValueError(
                f"model.{key} is {values[0]!r} in member {names[0]} but {value!r} in member {name}: "
                "the members of a sweep must share it (sweep over it in separate sweeps)"
            )
    return values[0]


def members_optimizer(factories: Sequence, flat: Tensor, names: Sequence[str]) -> torch.optim.Optimizer:
    """One optimizer of ``flat`` ``(K, P)`` that steps member ``k`` as ``factories[k]`` would:
    the class they share, their settings as ``(K,)`` tensors where they differ (``lr`` and
    ``alpha`` of :data:`PER_MEMBER_RATES`; any optimizer when they all agree)."""
    dummy = [torch.nn.Parameter(torch.zeros(1))]
    built = [factory(dummy) for factory in factories]
    cls = type(built[0])
    for name, opt in zip(names, built):
        if type(opt) is not cls:
            raise ValueError(
                f"member {name} uses {type(opt).__name__}, member {names[0]} {cls.__name__}: the members "
                "of a sweep must share the optimizer's class"
            )
    differ = {k: [opt.defaults[k] for opt in built] for k in built[0].defaults}
    differ = {k: v for k, v in differ.items() if any(x != v[0] for x in v)}
    if differ and (cls not in PER_MEMBER_RATES or not set(differ) <= {"lr", "alpha"}):
        raise ValueError(
            f"the members' {cls.__name__} settings differ in {sorted(differ)}: a sweep varies only lr and "
            f"alpha of {', '.join(c.__name__ for c in PER_MEMBER_RATES)} (mlp_torch.optim)"
        )
    if not differ:
        return factories[0]([flat])
    settings = {k: v for k, v in built[0].defaults.items() if k not in differ}
    settings.update({k: torch.tensor(v, dtype=flat.dtype, device=flat.device) for k, v in differ.items()})
    return cls([flat], **settings)


class MLPModule(L.LightningModule):
    """Train a sigmoid MLP with hand-written backprop (or autograd), cross-checked as it runs;
    or K of them at once, one per setting (:meth:`of_members`, as ``mlp-torch sweep`` does).

    Args:
        hidden_sizes: hidden layer widths; the network is ``[n_inputs, *hidden_sizes, n_outputs]``.
        n_inputs, n_outputs: input and output widths (the command line links them from the data).
        task: ``"classification"`` (accuracy) or ``"regression"`` (MSE in the target's units).
        target_low, target_high: regression only, the training targets' per-output range that
            the data mapped onto ``[0.1, 0.9]``; used to report MSE in the original units.
        cost: the data term, ``"cross_entropy"`` or the notes' ``"quadratic"`` (see
            :mod:`mlp_torch.model.costs`).
        l1: the L1 penalty's weight lambda in ``lambda sum |w|`` (sparsity); 0 turns it off.
        l2: the L2 penalty's weight gamma in ``gamma sum w^2`` (weight decay); 1e-4 by default,
            0 for the notes' unpenalized cost.
        reduction: ``"mean"`` (the cost averaged over the batch) or ``"sum"`` (the notes'
            accumulation); the penalties are added once either way.
        init: how weights start (see :data:`mlp_torch.network.INITS`): ``"scaled_normal"``
            ``N(0, 1/n_in)``, ``"scaled_uniform"``, ``"standard_normal"`` or ``"zeros"``.
        bias_init: the value every bias starts at (the notes suggest 0 or 0.01).
        seed: seeds the weights and the shuffle order.
        optimizer: a callable ``params -> Optimizer``, e.g. a class of :mod:`mlp_torch.optim`;
            ``None`` means ``Momentum(lr=3.0, alpha=0.9)``.
        lr_scheduler: a callable ``optimizer -> LRScheduler`` (e.g. ``ExponentialLR``), stepped
            once per epoch; ``None``: a constant rate.
        batch_size: ``"full"`` (batch GD), ``1`` (stochastic GD) or examples per mini-batch.
        chunk_size: with ``batch_size="full"``, examples per chunk when accumulating (``None``: all).
        grad_source: ``"manual"`` (hand-written backprop) or ``"autograd"`` drives the updates.
        crosscheck_every_n_steps: every n-th update also computes the other gradient and logs the
            largest per-parameter relative error as ``gradcheck/max_rel_err``; 0 turns it off.
        crosscheck_action: beyond the tolerance, ``"warn"`` or ``"error"`` (stop training).
        crosscheck_tolerance: relative error allowed; ``None``: by dtype (1e-10 float64, 1e-4 float32).
        dtype: ``"float32"`` or ``"float64"`` for the network (the data follows it).
        histograms_every_n_epochs: log weight and gradient histograms every n epochs (epochs 0,
            n, 2n, ...); 0 turns them off. Each costs milliseconds, more than the epoch itself
            for small data, hence not every epoch.
        num_threads: intra-op threads; ``None``: by the size of an update's largest matrix
            product (:func:`mlp_torch.train.threads.choose_num_threads`: 1 for small networks).
            Also the threads among which the native loop shares K > 1 members' epochs (``None``:
            every core this process may use, at most K).
        native: run each epoch's updates as one compiled call (:mod:`mlp_torch.train.native`)
            where it covers the run: on the CPU, small matrix products, hand-written gradients
            without a cross-check, an optimizer of :mod:`mlp_torch.optim`, one process; the
            torch loop otherwise, or with ``False``. The choice is logged once.
    """

    def __init__(
        self,
        hidden_sizes: list[int] = [100],  # noqa: B006 (read-only; jsonargparse shows it)
        n_inputs: int = 64,
        n_outputs: int = 10,
        task: Literal["classification", "regression"] = "classification",
        target_low: list[float] | None = None,
        target_high: list[float] | None = None,
        cost: Literal["quadratic", "cross_entropy"] = "cross_entropy",
        l1: float = 0.0,
        l2: float = DEFAULT_L2,
        reduction: Literal["mean", "sum"] = "mean",
        init: Literal["scaled_normal", "scaled_uniform", "standard_normal", "zeros"] = "scaled_normal",
        bias_init: float = 0.0,
        seed: int = 0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        batch_size: int | Literal["full"] = 16,
        chunk_size: int | None = None,
        grad_source: Literal["manual", "autograd"] = "manual",
        crosscheck_every_n_steps: int = 0,
        crosscheck_action: Literal["warn", "error"] = "warn",
        crosscheck_tolerance: float | None = None,
        dtype: Literal["float32", "float64"] = "float32",
        histograms_every_n_epochs: int = 10,
        num_threads: int | None = None,
        native: bool = True,
    ) -> None:
        super().__init__()
        check_objective_args(cost, l1, l2, reduction)
        if batch_size != "full":
            _positive_int("batch_size", batch_size)
        if chunk_size is not None:
            _positive_int("chunk_size", chunk_size)
        _positive_int("crosscheck_every_n_steps", crosscheck_every_n_steps, allow_zero=True)
        _positive_int("histograms_every_n_epochs", histograms_every_n_epochs, allow_zero=True)
        if num_threads is not None:
            _positive_int("num_threads", num_threads)
            if num_threads > (cores := os.cpu_count() or 1):
                raise ValueError(
                    f"num_threads={num_threads} is more than the {cores} cores of this machine: give 1 to "
                    f"{cores}, or leave it out (chosen by the size of an update)"
                )
        for name, value, choices in (
            ("task", task, ("classification", "regression")),
            ("grad_source", grad_source, ("manual", "autograd")),
            ("crosscheck_action", crosscheck_action, ("warn", "error")),
            ("dtype", dtype, tuple(DTYPES)),
        ):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {list(choices)}")
        if crosscheck_tolerance is not None and not (crosscheck_tolerance > 0):
            raise ValueError(f"crosscheck_tolerance={crosscheck_tolerance!r} must be > 0 (or null)")
        if task == "regression" and (target_low is None or target_high is None):
            raise ValueError("task='regression' needs target_low and target_high (the data links them)")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.automatic_optimization = False
        self.net = SigmoidMLP([n_inputs, *hidden_sizes, n_outputs], init=init, bias_init=bias_init, seed=seed)
        self.net.to(DTYPES[dtype])
        self.crosscheck_tolerance = crosscheck_tolerance or TOLERANCES[DTYPES[dtype]]["manual_vs_autograd"]
        # One member: this network, these settings. of_members() makes them K; these are lists of K.
        self.names = [""]  # each member's name ("" for fit's one member)
        self.member_hparams = [dict(self.hparams)]  # each member's hyper-parameters
        self.optimizer_factories, self.scheduler_factories = [optimizer], [lr_scheduler]
        self.records: list[dict[str, dict]] = [{}]  # settings each member's checkpoints carry (the CLI's)
        self.member_folders: list[Path | None] = [None]  # None: the logger's run folder
        self.status = [MemberStatus()]
        self.epoch_stats: dict[str, object] = {}  # the last epoch's J etc. per member, read by the callbacks
        self.crosscheck_errors: list[list[float]] = []  # the epoch's cross-checks' errors, per member
        self.member_schedulers: list = []
        self.events: list[RunEvents | None] = []

    @classmethod
    def of_members(cls, modules: Sequence[MLPModule], names: Sequence[str]) -> MLPModule:
        """One module training ``modules`` at once, member ``k`` exactly as ``modules[k]`` alone
        (its starting network, hyper-parameters, optimizer and scheduler); ``names`` are the
        members' names (their run folders). One module is returned as it is (K = 1)."""
        if not modules or len(modules) != len(names):
            raise ValueError(f"{len(modules)} modules but {len(names)} names: give one name per member")
        if len(set(names)) != len(names):
            raise ValueError(f"member names must differ, got {list(names)}")
        first = modules[0]
        for key in SHARED:
            _shared(modules, names, key)
        schedules = [m.scheduler_factory is not None for m in modules]
        if any(schedules) and not all(schedules):
            raise ValueError("some members have an lr_scheduler and some not: give all of them one, or none")
        if len(modules) > 1:
            first.net = StackedMLP([m.net for m in modules])
        first.names = list(names)
        first.member_hparams = [dict(m.hparams) for m in modules]
        first.optimizer_factories = [m.optimizer_factory for m in modules]
        first.scheduler_factories = [m.scheduler_factory for m in modules]
        first.records = [m.records[0] for m in modules]
        first.member_folders = [None] * len(modules)
        first.status = [MemberStatus() for _ in modules]
        return first

    @property
    def n_members(self) -> int:
        """K, the number of networks this module trains at once."""
        return len(self.names)

    @property
    def optimizer_factory(self):
        """Member 0's ``params -> Optimizer`` (``None``: :func:`default_optimizer`)."""
        return self.optimizer_factories[0]

    @property
    def scheduler_factory(self):
        """Member 0's ``optimizer -> LRScheduler``, or ``None``."""
        return self.scheduler_factories[0]

    def _per_member(self, key: str) -> float | Tensor:
        """A hyper-parameter's value: one number if all members share it, else a ``(K,)`` tensor
        on the network's device."""
        values = [float(hp[key]) for hp in self.member_hparams]
        if all(v == values[0] for v in values):
            return values[0]
        return torch.tensor(values, dtype=DTYPES[self.hparams.dtype], device=self.net.weights[0].device)

    def forward(self, x: Tensor) -> Tensor:
        """``y_hat``, ``(n, n_outputs)`` (``(K, n, n_outputs)`` for K members), in the sigmoid's range."""
        return self.net(x)

    # ---- training -------------------------------------------------------------------------
    #
    # The lean loop. The members' parameters are views of one flat tensor ``self.flat``, and the
    # optimizer updates that one tensor; the gradient is written into ``self.flat_grad``, laid out
    # alike (see loop.FlatParameters). Per update the loop only computes: the penalties' sums at the
    # weights used (one op each, when on), the batch's gradient, the step. Each example's ``z_L``
    # is kept, so its cost at the weights it was used with (train/J) is computed once per epoch;
    # nothing is read back to the host before the epoch ends.

    def parameter_names(self) -> list[str]:
        """Each member's parameters by their :class:`SigmoidMLP` names, in ``self.flat``'s order:
        all weights, then all biases."""
        L_ = len(self.net.weights)
        return [f"layers.{i}.{kind}" for kind in ("weight", "bias") for i in range(L_)]

    def _flatten_parameters(self) -> None:
        """Make the parameters views of ``self.flat`` (kept if they already are; redone, same
        values, after they were moved or cast) and lay out ``self.flat_grad`` alike."""
        params = [*self.net.weights, *self.net.biases]
        flat = getattr(self, "flat", None)
        if flat is not None and self._params.current(params):
            return
        self._params = loop.FlatParameters(params, self.n_members, flat)  # the optimizer holds flat: kept
        self.flat, self.flat_grad, self.grads = self._params.flat, self._params.grad, self._params.grads
        self.weights, self.biases = self._params.weights, self._params.biases

    def batch_gradient(self, x: Tensor, y: Tensor, scale: float, source: str, out: Tensor,
                       z_out: Tensor | None = None) -> None:  # fmt: skip
        """Write ``dJ/dp`` of the batch ``(x, y)``, each example's cost weighted by ``scale`` and
        the penalties added once, into ``out`` (laid out as ``self.flat``); the batch is fed in
        chunks of ``chunk_size`` if set. ``z_out`` ``(..., n, n_out)``: where to keep each example's
        ``z_L``. ``source``: ``"manual"`` (hand-written, :func:`mlp_torch.model.fused.fused_backprop`)
        or ``"autograd"``. Call it under ``torch.no_grad()``."""
        grads = self.grads if out is self.flat_grad else loop._views(out, self._params.shapes)
        loop.data_gradient(self.weights, self.biases, x, y, grads, cost=self.hparams.cost, scale=scale,
                           source=source, z_out=z_out, chunk=self.hparams.chunk_size)  # fmt: skip
        self._penalty_gradient(out, source)

    def _penalty_gradient(self, out: Tensor, source: str) -> None:
        """Add the penalties' gradient to the weights' part of ``out`` (laid out as ``self.flat``)."""
        g = self._params.g if out is self.flat_grad else out[..., : self._params.n_weights]
        loop.add_penalty_gradient(self._params.w, g, self.l1, self.l2, source)

    def _crosscheck(self, x: Tensor, y: Tensor, scale: float, step: int) -> list[float]:
        """Compare the data gradient just computed (``self.flat_grad``, this rank's share of the
        batch) plus the penalties' with the other source's gradient of the same examples; each
        member's largest per-parameter relative error, the maximum over the ranks."""
        source = self.hparams.grad_source
        mine, other = self.flat_grad.clone(), torch.empty_like(self.flat_grad)
        self._penalty_gradient(mine, source)
        self.batch_gradient(x, y, scale, "autograd" if source == "manual" else "manual", other)
        manual, auto = (mine, other) if source == "manual" else (other, mine)
        K, names = self.n_members, self.parameter_names()
        rows = [(manual, auto)] if K == 1 else [(manual[k], auto[k]) for k in range(K)]
        shapes = [g.shape[1:] if K > 1 else g.shape for g in self.grads]
        errors = torch.tensor(
            [[relative_error(m, a) for m, a in zip(loop._views(mk, shapes), loop._views(ak, shapes))]
             for mk, ak in rows], dtype=torch.float64, device=mine.device,
        )  # (K, n_params)  # fmt: skip
        errors = max_over_ranks(errors)
        worst, where = errors.max(dim=1)
        for k, (error, i) in enumerate(zip(worst.tolist(), where.tolist())):
            if not error <= self.crosscheck_tolerance:
                member = f"member {self.names[k]}: " if K > 1 else ""
                msg = (
                    f"{member}hand-written and autograd gradients disagree at update {step}: parameter "
                    f"{names[i]} has relative error {error:.3g} > tolerance {self.crosscheck_tolerance:g}"
                )
                if self.hparams.crosscheck_action == "error":
                    raise CrossCheckError(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return worst.tolist()

    def _set_threads(self, rows: int) -> None:
        """Intra-op threads by :func:`mlp_torch.train.threads.choose_num_threads` for all the
        members' work (or ``num_threads``), the machine's cores shared among its DDP processes on
        the CPU; logged once."""
        decided = getattr(self, "_threads_decided", None)  # (rows, threads) of the last epoch
        if decided is not None and decided[0] == rows and decided[1] == torch.get_num_threads():
            return  # every epoch after the first: nothing to choose, set or log
        K, sizes = self.n_members, self.net.sizes
        threads = self.hparams.num_threads or choose_num_threads(sizes, rows, members=K)
        if not self.hparams.num_threads and self.flat.device.type == "cpu" and self.trainer.num_devices > 1:
            threads = max(1, threads // self.trainer.num_devices)  # the processes on this machine
        whose = " for all members" if K > 1 else ""
        line = use_threads(threads, largest_product(sizes, rows, K), bool(self.hparams.num_threads), whose)
        self._threads_decided = (rows, threads)
        if getattr(self, "_threads_logged", None) != threads:
            self._threads_logged = threads
            rank_zero_info(line)

    def setup(self, stage: str) -> None:
        self._threads_decided = self._native_decided = None  # a new run (another trainer): choose again
        self._validates_itself = stage == "fit" and self._can_validate_itself()
        if self._validates_itself:  # Lightning's validation loop costs more per epoch than our updates
            self._limit_val_batches, self.trainer.limit_val_batches = self.trainer.limit_val_batches, 0

    def teardown(self, stage: str) -> None:
        if stage == "fit" and getattr(self, "_validates_itself", False):  # trainer.validate() after fit
            self.trainer.limit_val_batches = self._limit_val_batches
        world = self.trainer.world_size
        self.check_world_size(world)
        if world > 1:  # the module reduces its epoch metrics over the ranks itself: Lightning's hint is moot
            warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(")

    def _can_validate_itself(self) -> bool:
        """Whether a fit's validation can run at the end of its training step, on the data
        module's validation split (held on the device): one forward pass, instead of
        Lightning's validation loop (its hooks and bookkeeping cost milliseconds per epoch)."""
        trainer, dm = self.trainer, self.trainer.datamodule
        x = getattr(dm, "x_val", None)
        return (
            isinstance(x, Tensor) and x.shape[-2] > 0 and trainer.val_check_interval == 1.0
            and trainer.limit_val_batches in (1.0, None) and trainer.check_val_every_n_epoch is not None
        )  # fmt: skip

    def check_world_size(self, world: int) -> None:
        """Under data parallelism a global batch must give each of the ``world`` processes at
        least one example: ``ValueError`` if ``batch_size`` < ``world``."""
        size = self.hparams.batch_size
        if world > 1 and size != "full" and size < world:
            raise ValueError(
                f"batch_size={size} is smaller than the {world} processes (devices x nodes) sharing "
                f"each update; use --model.batch_size >= {world} or fewer devices"
            )

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's rank and the number of processes sharing each update."""
        return self.trainer.global_rank, self.trainer.world_size

    def _cached(self, key: tuple, make):
        """``make()``, made once per ``key`` and kept (the last 16): what every epoch of a run
        rebuilds the same (its updates' row of each example, ``arange(n)``)."""
        cache = self.__dict__.setdefault("_epoch_cache", {})
        if key not in cache:
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[key] = make()
        return cache[key]

    def _sparsity(self) -> dict[str, Tensor | np.ndarray]:
        """``sparsity/layer_i``: the fraction of layer ``i``'s weights below :data:`NEAR_ZERO` in
        size, of each member (on the CPU by numpy: one pass over the flat weights, not four
        tensor operations per layer)."""
        if self.flat.device.type != "cpu":
            return {f"sparsity/layer_{i}": (W.abs() < NEAR_ZERO).to(W.dtype).mean(dim=(-2, -1))
                    for i, W in enumerate(self.weights)}  # fmt: skip

        def layout():  # every weight, layer after layer (a view), each layer's first and count
            sizes = np.asarray([W[0].numel() if self.n_members > 1 else W.numel() for W in self.weights])
            names = [f"sparsity/layer_{i}" for i in range(len(sizes))]
            return np.atleast_2d(self._params.w.detach().numpy()), np.cumsum([0, *sizes[:-1]]), sizes, names

        w, starts, sizes, names = self._cached(("sparsity", self.flat.data_ptr()), layout)  # (K, P_w)
        small = np.add.reduceat(np.abs(w) < NEAR_ZERO, starts, axis=-1) / sizes  # (K, L)
        return dict(zip(names, small.T))

    def _epoch_shards(self, n: int, size: int) -> tuple[Tensor | None, np.ndarray, np.ndarray, int]:
        """This rank's part of the epoch: the training examples its updates use, in use order, on
        the CPU (``None``: all ``n`` in stored order; ``(n_local,)`` when all members share one
        order, else ``(K, n_local)``), the bounds of each update's rows in them (``(U + 1,)``:
        update ``u`` uses rows ``bounds[u]:bounds[u + 1]``), each update's global batch size
        ``(U,)`` and the most rows of one update on this rank."""
        rank, world = self._rank_and_world()
        full = self.hparams.batch_size == "full"
        seeds = [hp["seed"] for hp in self.member_hparams]
        order = None if full else loop.epoch_orders(n, seeds, self.current_epoch)  # (n,) or (K, n)

        def bounds_and_sizes():
            starts = np.arange(0, n, size)  # (U,): each update's first position in the epoch's order
            return np.append(starts, n), np.minimum(size, n - starts)  # (U + 1,), (U,)

        bounds, sizes = self._cached(("bounds", n, size), bounds_and_sizes)
        if world == 1:
            return order, bounds, sizes, min(size, n)
        shards = update_shards(n, size, rank, world)  # positions in the epoch's order
        positions = torch.cat([torch.arange(s.start, s.stop) for s in shards])  # (n_local,)
        order = positions if order is None else order[..., positions]
        bounds = np.cumsum([0] + [s.stop - s.start for s in shards])
        return order, bounds, sizes, int(np.diff(bounds).max())

    def _epoch_chunks(self, bounds: np.ndarray) -> list[range]:
        """The epoch's updates in chunks of consecutive updates whose examples fit the data
        module's ``train_chunk_rows`` (streamed training); one chunk of all when not streamed."""
        limit = getattr(self.trainer.datamodule, "train_chunk_rows", None)
        if limit is None:
            return [range(len(bounds) - 1)]
        chunks, first = [], 0
        for k, (start, stop) in enumerate(zip(bounds.tolist(), bounds[1:].tolist())):
            if stop - start > limit:
                raise ValueError(
                    f"one update's {stop - start} examples do not fit the memory budget of "
                    f"{limit} training examples; use a smaller batch_size or a larger --data.memory_budget_mb"
                )
            if stop - bounds[first] > limit:
                chunks.append(range(first, k))
                first = k
        return [*chunks, range(first, len(bounds) - 1)]

    def _to_device(self, x: Tensor, y: Tensor, index: Tensor, y_out: Tensor) -> tuple[Tensor, Tensor]:
        """Examples ``index`` of the host-held split ``(x, y)`` on the device (streamed training);
        ``y`` is also kept in ``y_out`` for the epoch's ``J``."""
        index = index.cpu()  # (m,) or (K, m)
        xc = loop.gather(x, index).to(self.flat.device, non_blocking=True)  # (..., m, n_in)
        y_out.copy_(loop.gather(y, index), non_blocking=True)  # (..., m, n_out)
        return xc, y_out

    def _native_loop(self, opt, rows: int) -> bool:
        """Whether this run's epochs run as one compiled call each (:mod:`mlp_torch.train.native`);
        decided and logged once per run, with the reason when not."""
        if getattr(self, "_native_decided", None) is not None:
            return self._native_decided
        from mlp_torch.train import native

        kind = "Nesterov" if opt.defaults.get("nesterov") else type(opt).__name__
        why = self._why_not_native(opt, kind, rows)
        self._native_decided, self._native_rule = not why, native.RULES.get(kind, -1)
        # members are independent: their epochs shared among the cores (one compiled call per
        # thread, each member's numbers the same whatever the split), once per epoch, not per update
        K = self.n_members
        self._native_workers = min(K, self.hparams.num_threads or available_cores())
        on = "each epoch's updates in one compiled call"
        if self._native_workers > 1:
            on += f", the {K} members' epochs shared among {self._native_workers} threads"
        on += "; --model.native false for the torch loop"
        rank_zero_info(f"native: on ({on})" if not why else f"native: off ({why}): the torch loop")
        return self._native_decided

    def load_native(self, trainer) -> None:
        """Load the native loop's machine code now (numba's import and its cached code: about half
        a second, once per process) where this run will likely train with it (CPU, one process,
        hand-written gradients, no cross-check); ``mlp-torch fit`` and ``sweep`` call this before
        their clock starts, so that the wall time they print is the training's, the first epoch
        no longer half a second long."""
        hp = self.hparams
        if not hp.native or hp.grad_source != "manual" or hp.crosscheck_every_n_steps:
            return
        if trainer.strategy.root_device.type != "cpu" or trainer.world_size > 1:
            return
        from mlp_torch.train import native

        native.warm([self.net.weights[0].detach().numpy().dtype])

    def _why_not_native(self, opt, kind: str, rows: int) -> str:
        """Why the native loop cannot train this run (``""``: it can)."""
        from mlp_torch.train import native

        hp, world = self.hparams, self._rank_and_world()[1]
        product = largest_product(self.net.sizes, rows)  # one member's: the loop takes them one by one
        if not hp.native:
            return "--model.native false"
        if not native.available():
            return native.why_unavailable()
        if self.flat.device.type != "cpu":
            return f"on {self.flat.device.type}, not the CPU"
        if hp.grad_source != "manual":
            return "grad_source autograd"
        if hp.crosscheck_every_n_steps:
            return "the cross-check runs in the torch loop"
        if world > 1:
            return f"{world} processes: one collective per update"
        if kind not in native.RULES:
            return f"{type(opt).__name__} is not an optimizer of mlp_torch.optim"
        if not _unhooked(opt):
            return "a step hook is registered"
        if product >= native.NATIVE_PRODUCT:
            return f"an update's largest matrix product, {product:,} multiply-adds, is one for threads"
        return ""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch  # the training split: (N, n_in) shared by all members, or (K, N, n_in) one each
        hp, K = self.hparams, self.n_members
        n = x.shape[-2]
        size = n if hp.batch_size == "full" else min(hp.batch_size, n)
        self._flatten_parameters()
        index, bounds, sizes, largest = self._epoch_shards(n, size)
        chunks = self._epoch_chunks(bounds)
        U = len(sizes)  # updates
        rows = min(largest, hp.chunk_size or size)
        self._set_threads(rows)
        self.flat.grad = self.flat_grad
        if K > 1:
            self._epoch_start = self.flat.detach().clone()  # (K, P): where a diverging member returns
        opt = self.optimizers(use_pl_optimizer=False)
        self.crosscheck_errors.clear()
        if self._native_loop(opt, rows):
            metrics = self._native_epoch(x, y, index, bounds, sizes, chunks, opt)
        else:
            index = None if index is None else index.to(self.flat.device)
            with torch.no_grad():
                per_update, sums = self._torch_epoch(x, y, index, bounds, sizes, chunks, opt)
            counts = self._cached(("counts", n, size, self.flat.device),
                                  lambda: torch.from_numpy(sizes).to(self.flat.device))  # fmt: skip
            train, js = loop.epoch_objective(per_update, counts, sums, reduction=hp.reduction, l1=self.l1,
                                             l2=self.l2)  # fmt: skip
            bad = ~torch.isfinite(js.reshape(K, -1))  # (K, U): the updates whose J was inf or NaN
            metrics = {f"train/{k}": v for k, v in train.items()}
            metrics["_first_nonfinite"] = torch.where(bad.any(1), bad.int().argmax(1), -1)  # (K,): or -1
            metrics.update(self._sparsity())
        self._count_updates(U)
        self.epoch_examples = index if index is not None else self._cached(
            ("arange", n), lambda: torch.arange(n))  # (..., n_local)  # fmt: skip
        streamed = len(chunks) > 1 or x.device != self.flat.device
        self._end_epoch(metrics, opt, U, len(chunks) if streamed else 0)

    def _native_epoch(self, x: Tensor, y: Tensor, index: Tensor | None, bounds: np.ndarray, sizes: np.ndarray,
                      chunks: list[range], opt) -> dict[str, np.ndarray]:  # fmt: skip
        """The epoch's updates by :func:`mlp_torch.train.native.epoch`, one call per chunk, in place
        on ``self.flat``, ``self.flat_grad`` and the optimizer's state; returns the epoch's figures
        (``train/J``, ``train/cost``, ``train/l1``, ``train/l2``, each member's first non-finite
        update, ``sparsity/layer_i``; ``(K,)`` numpy arrays) by :func:`mlp_torch.train.native.figures`."""
        from mlp_torch.train import native

        K, U, dtype = self.n_members, len(sizes), x.numpy().dtype  # (the data's dtype is the network's)
        group, state = opt.param_groups[0], opt.state[self.flat]
        key = {1: "dw", 2: "velocity", 3: "velocity"}.get(self._native_rule)
        if key is not None and key not in state:
            state[key] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)  # as its step would

        def members(t: Tensor):  # (K, ...) as numpy, sharing the tensor's memory (made once per tensor)
            return self._cached(("numpy", t.data_ptr(), t.shape), lambda: (t if K > 1 else t[None]).numpy())

        costs, sums = np.zeros((K, U), dtype), np.zeros((2, K, U), dtype)
        mean = self.hparams.reduction == "mean"
        scales = self._cached(("scales", sizes.tobytes(), mean), lambda: 1.0 / sizes if mean else np.ones(U))
        per_member = self._per_member_list
        settings = dict(cost=self.hparams.cost, rule=self._native_rule, l1=per_member(self.l1),
                        l2=per_member(self.l2), lr=per_member(group["lr"]),
                        alpha=per_member(group.get("alpha", 0.0)), active=self._active,
                        workers=self._native_workers,
                        threads=max(1, torch.get_num_threads() // self._native_workers))  # fmt: skip
        x, y, order = x.numpy(), y.numpy(), None if index is None else index.numpy()
        for updates in chunks:  # one chunk (all of this rank's examples) unless streamed
            lo, hi = int(bounds[updates.start]), int(bounds[updates.stop])
            xc, yc = (x, y) if order is not None else (x[..., lo:hi, :], y[..., lo:hi, :])
            done = slice(updates.start, updates.stop)
            native.epoch(
                members(self.flat), members(self.flat_grad), None if key is None else members(state[key]),
                xc, yc, costs[:, done], sums[..., done], self.net.sizes,
                bounds[updates.start : updates.stop + 1] - lo, scales[done],
                order=None if order is None else order[..., lo:hi], **settings,
            )  # fmt: skip
        names = self._cached(("figures", len(self.net.sizes)), lambda: [
            *(f"train/{k}" for k in native.FIGURES[:4]), "_first_nonfinite",
            *(f"sparsity/layer_{i}" for i in range(len(self.net.sizes) - 1))])  # fmt: skip
        figures = native.figures(costs, sums, sizes, settings["l1"], settings["l2"], members(self.flat),
                                 self.net.sizes, mean=mean, near_zero=NEAR_ZERO)  # (K, 5 + L)  # fmt: skip
        return dict(zip(names, figures.T))

    def _per_member_list(self, value: Tensor | float) -> list[float]:
        """A setting (one value, or a ``(K,)`` tensor of one per member) as one float per member."""
        return value.tolist() if isinstance(value, Tensor) else [float(value)] * self.n_members

    def _torch_epoch(self, x: Tensor, y: Tensor, index: Tensor | None, bounds: np.ndarray, sizes: np.ndarray,
                     chunks: list[range], opt) -> tuple[Tensor, Tensor]:  # fmt: skip
        """The epoch's updates by torch operations, one update at a time; returns each update's
        cost sum (``(U,)`` or ``(K, U)``) and the penalties' sums at its weights (``(2, U)`` or
        ``(2, K, U)``)."""
        hp, K, U, device = self.hparams, self.n_members, len(sizes), self.flat.device
        streamed = len(chunks) > 1 or x.device != device  # the data is on the host when streamed
        if streamed and index is None:
            index = torch.arange(x.shape[-2], device=device)  # (n,)
        if index is not None and not streamed:
            x, y = loop.gather(x, index), loop.gather(y, index)  # this rank's examples in use order
        n_local = int(bounds[-1])
        lead = () if K == 1 else (K,)
        y_shape = (*lead, n_local, y.shape[-1]) if index is not None and index.dim() == 2 else (
            *y.shape[:-2], n_local, y.shape[-1])  # fmt: skip
        y_local = y if len(chunks) == 1 else y.new_empty(y_shape, device=device)
        z_out = y.new_empty((*lead, n_local, y.shape[-1]), device=device)  # each example's z_L where used
        sums = self.flat.new_zeros(2, *lead, U)  # sum |w| and sum w^2 at each update's weights
        step = opt.update if _unhooked(opt) else opt.step
        mean, source, every = hp.reduction == "mean", hp.grad_source, hp.crosscheck_every_n_steps
        first, distributed = self.global_step, self._rank_and_world()[1] > 1
        mask = self._frozen_mask if self._masked else None  # (K, 1): frozen members take no step
        w = self._params.w
        l1_at, l2_at = (sums[i].unbind(-1) if on else [None] * U
                        for i, on in enumerate((loop._on(self.l1), loop._on(self.l2))))  # fmt: skip
        for updates in chunks:  # one chunk (all of this rank's examples) unless streamed
            lo, hi = int(bounds[updates.start]), int(bounds[updates.stop])
            if streamed:
                xc, yc = self._to_device(x, y, index[..., lo:hi], y_local[..., lo:hi, :])
            else:
                xc, yc = x, y
            lengths = np.diff(bounds[updates.start : updates.stop + 1]).tolist()
            batches = zip(updates, xc.split(lengths, -2), yc.split(lengths, -2),
                          z_out[..., lo:hi, :].split(lengths, -2))  # fmt: skip
            for k, xb, yb, zb in batches:  # update k's examples, targets and z_L
                if l1_at[k] is not None or l2_at[k] is not None:
                    loop.penalty_sums(w, l1_at[k], l2_at[k])
                scale = 1.0 / int(sizes[k]) if mean else 1.0  # the GLOBAL batch's scale
                loop.data_gradient(self.weights, self.biases, xb, yb, self.grads, cost=hp.cost,
                                   scale=scale, source=source, z_out=zb, chunk=hp.chunk_size)  # fmt: skip
                if every and (first + k) % every == 0:
                    self.crosscheck_errors.append(self._crosscheck(xb, yb, scale, first + k))
                if distributed:
                    sum_over_ranks(self.flat_grad)  # the whole batch's cost gradient, all members
                loop.add_penalty_gradient(w, self._params.g, self.l1, self.l2, source)  # counted once
                if mask is not None:
                    self.flat_grad.masked_fill_(mask, 0.0)
                step()
        which = self._cached(("which", bounds.tobytes(), device), lambda: torch.repeat_interleave(
            torch.from_numpy(np.diff(bounds)).to(device), output_size=n_local))  # (n_local,)  # fmt: skip
        return loop.update_costs(z_out, y_local, which, U, cost=hp.cost), sums

    def _end_epoch(self, metrics: dict, opt, updates: int, chunks: int) -> None:
        """The epoch's figures (``train/*``, ``sparsity/*``, each member's first non-finite update)
        logged with ``lr`` and the cross-check's, ``self.epoch_stats`` for the callbacks, histograms,
        and validation when the module runs it."""
        metrics["lr"] = opt.param_groups[0]["lr"]
        if self.crosscheck_errors:
            metrics["gradcheck/max_rel_err"] = torch.tensor(self.crosscheck_errors).amax(0)  # (K,)
        logged = self.log_epoch(metrics)
        self.epoch_stats.update({
            "J": [m["train/J"] for m in logged],
            "first_nonfinite_update": [int(m.pop("_first_nonfinite")) for m in logged],
            "updates": updates,
            "chunks": chunks,  # streamed: the training split's chunks
            "lr": [m["lr"] for m in logged],
        })  # fmt: skip
        self._log_histograms()
        if self._validates_itself and (self.current_epoch + 1) % self.trainer.check_val_every_n_epoch == 0:
            dm = self.trainer.datamodule
            with torch.no_grad():
                self._validate(dm.x_val, dm.y_val)

    def log_epoch(self, metrics: dict[str, Tensor | np.ndarray | float | Sequence[float]]
                  ) -> list[dict[str, float]]:  # fmt: skip
        """Log epoch-level scalars, each one value for all members or one per member (a ``(K,)``
        tensor or array, or a list), at step = the epoch: into each member's record of the epoch
        (written to its TensorBoard run when the epoch ends) and, with one member, into
        ``trainer.callback_metrics`` (as ``self.log(..., on_epoch=True)`` would for one training
        step per epoch). One read from the device for all: ``self.log`` costs about a millisecond
        per name and call, more than an epoch of updates on small data. Returns what each member
        got, ``[{name: value}]``."""
        K = self.n_members
        tensors = {k: v for k, v in metrics.items() if isinstance(v, Tensor)}
        values = {}
        if tensors:
            stacked = torch.stack(
                [v.detach().to(torch.float64).reshape(-1).expand(K) for v in tensors.values()]
            )
            values = dict(zip(tensors, stacked.tolist()))  # one read from the device
        for k, v in metrics.items():
            if k in values:
                continue
            if isinstance(v, np.ndarray):
                values[k] = v.tolist() if v.size == K and v.ndim == 1 else [float(v.reshape(-1)[0])] * K
            else:
                values[k] = [float(x) for x in v] if isinstance(v, Sequence) else [float(v)] * K
        logged = [{k: v[m] for k, v in values.items()} for m in range(K)]
        if self._trainer is not None:
            for m, record in enumerate(self.epoch_log if hasattr(self, "epoch_log") else []):
                record.update({k: v for k, v in logged[m].items() if not k.startswith("_")})
            if K == 1:
                public = [k for k in values if not k.startswith("_")]
                firsts = torch.tensor([values[k][0] for k in public]).unbind()  # floats
                self.trainer.callback_metrics.update(zip(public, firsts))
        return logged

    def _count_updates(self, k: int) -> None:
        """Count ``k`` optimizer steps in ``global_step``, as Lightning's optimizer wrapper would
        one by one (the loop steps the optimizer itself, without the wrapper's per-step cost)."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.total.increment_by(k)
        progress.current.increment_by(k)

    def _log_histograms(self) -> None:
        """Histograms of each member's weights and gradients (the epoch's last update's), every
        ``histograms_every_n_epochs`` epochs (from the first)."""
        every = self.hparams.histograms_every_n_epochs
        if not (every and self.current_epoch % every == 0):
            return
        K = self.n_members
        names = self.parameter_names()
        for k, events in enumerate(self.events):
            if events is None or not self._active[k]:
                continue
            tensors = {}
            for name, p, g in zip(names, [*self.weights, *self.biases], self.grads):
                for kind, t in (("weights", p), ("grads", g)):
                    tensors[f"{kind}/{name}"] = t if K == 1 else t[k]
            events.histograms(tensors, self.current_epoch)  # one event

    # ---- the members' starts and stops ----------------------------------------------------

    def on_fit_start(self) -> None:
        self.l1, self.l2 = self._per_member("l1"), self._per_member("l2")
        K = self.n_members
        self._active = [not s.stopped for s in self.status]
        self._masked = False
        self._frozen_mask = torch.zeros(K, 1, dtype=torch.bool, device=self.flat.device)
        self.epoch_log = [{} for _ in range(K)]
        run_folder = self.trainer.log_dir if self.logger is not None else None  # (a collective under DDP)
        self.events = []
        if self.trainer.is_global_zero:  # the other processes write nothing
            for folder in self.member_folders:
                folder = run_folder if folder is None else folder
                self.events.append(None if folder is None else RunEvents(folder))

    def on_train_epoch_start(self) -> None:
        for record in self.epoch_log:  # (read by the checkpoint callbacks after on_train_epoch_end)
            record.clear()

    def on_train_start(self) -> None:
        """Each member's schedule starts from its rate as restored (a resumed run), and stopped
        members (a resumed sweep) stay stopped."""
        opt = self.optimizers(use_pl_optimizer=False)
        for k, rate in enumerate(getattr(self, "_rates", [])):
            lr = opt.param_groups[0]["lr"]
            rate.param_groups[0]["lr"] = float(lr[k]) if isinstance(lr, Tensor) else float(lr)
        for k, status in enumerate(self.status):
            if status.stopped:
                self._freeze(k, status.stopped)
        if not any(self._active):  # a resumed run whose members have all stopped
            self.trainer.should_stop = True

    def stop_member(self, k: int, stopped: str, why: str) -> None:
        """Member ``k`` stops training: ``stopped`` is ``"converged"`` (it takes no more steps) or
        ``"diverged"`` (its weights go back to where the epoch began, then as converged). With one
        member, training ends."""
        status = self.status[k]
        status.stopped, status.why = stopped, why
        status.epochs = self.current_epoch + (stopped != "diverged")
        if stopped == "diverged" and self.n_members > 1:
            with torch.no_grad():
                self.flat[k] = self._epoch_start[k]
        self._freeze(k, stopped)
        if not any(self._active):
            self.trainer.should_stop = True

    def _freeze(self, k: int, stopped: str) -> None:
        """Member ``k`` takes no more steps: its optimizer state is zeroed and its rate set to 0
        (with an optimizer of :data:`PER_MEMBER_RATES`, a step of ``0 * g`` is exactly none while
        ``g`` is finite); after a divergence, or with any other optimizer, the frozen members'
        gradients are masked out instead (one more operation per update)."""
        self._active[k] = False
        if self.n_members == 1:
            return
        opt = self.optimizers(use_pl_optimizer=False)
        for state in opt.state.values():
            for t in state.values():
                if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == self.n_members:
                    t[k] = 0
        self._frozen_mask[k] = True
        if stopped == "diverged" or not isinstance(opt, PER_MEMBER_RATES):
            self._masked = True  # its gradient may not stay finite: mask from now on
        else:
            self._set_rates(opt)

    def _set_rates(self, opt, rates: list[float] | None = None) -> None:
        """The members' learning rates into ``opt`` (0 for a frozen member): ``rates``, or those
        already there."""
        group = opt.param_groups[0]
        if rates is None:
            current = group["lr"]
            rates = current.tolist() if isinstance(current, Tensor) else [current] * self.n_members
        rates = [r if active else 0.0 for r, active in zip(rates, self._active)]
        if self.n_members == 1:
            group["lr"] = rates[0] if self._active[0] else group["lr"]
        elif all(r == rates[0] for r in rates) and not isinstance(group["lr"], Tensor):
            group["lr"] = rates[0]
        else:
            group["lr"] = torch.tensor(rates, dtype=self.flat.dtype, device=self.flat.device)

    def on_train_epoch_end(self) -> None:
        """Step each member's schedule, write each member's epoch to its TensorBoard run."""
        if self.member_schedulers:
            for rate, scheduler in zip(self._rates, self.member_schedulers):
                rate.step()  # (its member stepped: the scheduler's check of the order)
                scheduler.step()
            self._set_rates(self.optimizers(use_pl_optimizer=False),
                            [rate.param_groups[0]["lr"] for rate in self._rates])  # fmt: skip
        for k, (record, status) in enumerate(zip(self.epoch_log, self.status)):
            trained = not status.stopped or (
                status.stopped == "converged" and status.epochs == self.current_epoch + 1
            )
            if trained:  # a whole epoch (not one a member diverged in)
                status.epochs = self.current_epoch + 1
                status.last = {n: v for n, v in record.items() if n.startswith(("train/", "val/"))}
                events = self.events[k] if k < len(self.events) else None
                if events is not None and record:
                    events.add({**record, "epoch": self.current_epoch}, step=self.current_epoch)
        for events in self.events:
            if events is not None:
                events.flush()

    def on_train_end(self) -> None:
        for events in self.events:
            if events is not None:
                events.close()
        for status in self.status:
            if not status.stopped:
                status.stopped, status.why = "max_epochs", f"reached max_epochs={self.trainer.max_epochs}"

    def progress_text(self) -> str | None:
        """What the progress bar shows of a sweep's epoch (``None`` with one member: the run's
        own figures): how many members train and have stopped, and the lowest val J so far."""
        if self.n_members == 1:
            return None
        counts: dict[str, int] = {}
        for status in self.status:
            counts[status.stopped or "training"] = counts.get(status.stopped or "training", 0) + 1
        text = f"{self.n_members} members: " + ", ".join(f"{n} {what}" for what, n in counts.items())
        best = [(s.best["val/J"], name) for s, name in zip(self.status, self.names) if s.best]
        if best:
            J, name = min(best)
            text += f"  lowest val J {J:.6g} ({name})"
        return text

    # ---- evaluation -----------------------------------------------------------------------

    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``{"J", "acc"}`` (classification) or ``{"J", "mse"}`` (regression, in the target's
        units) of every member on one whole split (``()`` for one member, ``(K,)`` for K); under
        DDP each rank evaluates its shard (:func:`mlp_torch.train.distributed.shard`) and the sums
        are reduced over the ranks, so every rank gets the whole split's values."""
        n, hp = x.shape[-2], self.hparams
        scale = 1.0 / n if hp.reduction == "mean" else 1.0
        rank, world = self._rank_and_world() if self._trainer is not None else (0, 1)
        rows = shard(n, rank, world)
        x, y = x[..., rows, :], y[..., rows, :]  # (..., n_rank, n_in), (..., n_rank, n_out)
        weights, biases = self.net.weights, self.net.biases
        zs, activations = feedforward(weights, biases, x)
        y_hat = activations[-1]  # (..., n_rank, n_out)
        l1, l2 = getattr(self, "l1", hp.l1), getattr(self, "l2", hp.l2)
        terms = output_terms(weights, zs[-1], y_hat, y, cost=hp.cost, l1=l1, l2=l2, scale=scale)
        if hp.task == "classification":
            name, count = "acc", n
            total = (y_hat.argmax(-1) == y.argmax(-1)).sum(-1).to(y.dtype)  # right answers
        else:
            low, high = (torch.tensor([m[key] for m in self.member_hparams], dtype=y.dtype, device=y.device)
                         for key in ("target_low", "target_high"))  # (K, k)  # fmt: skip
            if self.n_members == 1:
                low, high = low[0], high[0]
            else:
                low, high = low[:, None, :], high[:, None, :]
            error = from_unit_range(y_hat, low, high) - from_unit_range(y, low, high)  # (..., n_rank, k)
            name, count, total = "mse", n * y.shape[-1], (error * error).sum(dim=(-2, -1))
        if world > 1:
            together = sum_over_ranks(torch.stack([terms["cost"], total]))  # one collective for both
            terms["J"] = together[0] + terms["l1"] + terms["l2"]
            total = together[1]
        return {"J": terms["J"], name: total / count}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Every member's ``val/J`` and accuracy (or MSE); in a fit, a member's lowest ``val/J``
        so far makes this its best epoch."""
        if self.trainer.state.fn != "fit" or self.trainer.sanity_checking:
            figures = {f"val/{k}": v for k, v in self.evaluate(*batch).items()}
            self.log_dict(figures, prog_bar=True)  # validate returns what is logged
            return
        self._validate(*batch)

    def _validate(self, x: Tensor, y: Tensor) -> None:
        """An epoch's validation in a fit: each member's figures logged, its best epoch kept. By
        :func:`mlp_torch.train.native.evaluate` where the native loop trains a classification."""
        if getattr(self, "_native_decided", False) and self.hparams.task == "classification":
            from mlp_torch.train import native

            K = self.n_members
            flat = self.flat.detach()
            figures = native.evaluate(
                (flat if K > 1 else flat[None]).numpy(), x.numpy(), y.numpy(), self.net.sizes,
                cost=self.hparams.cost, l1=self._per_member_list(self.l1), l2=self._per_member_list(self.l2),
                mean=self.hparams.reduction == "mean", active=self._active, workers=self._native_workers,
                threads=max(1, torch.get_num_threads() // self._native_workers),
            )  # (K, 2), NaN for the members that have stopped (their figures are not used)  # fmt: skip
            figures = {"val/J": figures[:, 0], "val/acc": figures[:, 1]}
        else:
            figures = {f"val/{k}": v for k, v in self.evaluate(x, y).items()}
        logged = self.log_epoch(figures)
        for status, values, active in zip(self.status, logged, self._active):
            J = values["val/J"]
            if active and math.isfinite(J) and (status.best_epoch < 0 or J < status.best["val/J"]):
                status.best_epoch, status.best = self.current_epoch, dict(values)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.n_members > 1:
            raise RuntimeError(
                "test one member at a time, from its checkpoint (mlp-torch test --ckpt_path ...)"
            )
        self.log_dict({f"test/{k}": v for k, v in self.evaluate(*batch).items()})

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """The outputs ``y_hat`` ``(n, k)``: one per class (classification), or the values in the
        target's units (regression)."""
        y_hat = self.net(batch[0])
        if self.hparams.task == "classification":
            return y_hat
        return from_unit_range(y_hat, self.hparams.target_low, self.hparams.target_high)

    # ---- optimizer, schedules, checkpoints ------------------------------------------------

    def configure_optimizers(self):
        """The optimizer of one tensor, ``self.flat``, of which the parameters are views, and each
        member's learning-rate schedule (stepped once per epoch by :meth:`on_train_epoch_end`)."""
        self._flatten_parameters()
        factories = [f or default_optimizer for f in self.optimizer_factories]
        if self.n_members == 1:
            optimizer = factories[0]([self.flat])
        else:
            optimizer = members_optimizer(factories, self.flat, self.names)
        self._rates, self.member_schedulers = [], []
        if self.scheduler_factories[0] is not None:
            group = optimizer.param_groups[0]
            for k, factory in enumerate(self.scheduler_factories):
                settings = {key: (float(v[k]) if isinstance(v, Tensor) else v) for key, v in group.items()
                            if key != "params"}  # fmt: skip
                rate = _MemberRate(settings)
                self._rates.append(rate)
                self.member_schedulers.append(factory(rate))
            saved = getattr(self, "_saved_schedulers", None) or []
            for scheduler, state in zip(self.member_schedulers, saved):
                scheduler.load_state_dict(state)
            self._saved_schedulers = None
            self._active = getattr(self, "_active", [True] * self.n_members)
            self._set_rates(optimizer, [rate.param_groups[0]["lr"] for rate in self._rates])
        return optimizer

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Each member's schedule; with one member the settings its checkpoints carry (the
        optimizer's and scheduler's class and settings, the data's), with K the members' names
        and statuses (a sweep's own checkpoint)."""
        checkpoint["lr_schedulers"] = [scheduler.state_dict() for scheduler in self.member_schedulers]
        if self.n_members == 1:
            for key, values in self.records[0].items():
                checkpoint.setdefault(key, {}).update(values)
        else:
            checkpoint["members"] = {"names": list(self.names), "status": [s.as_dict() for s in self.status]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._saved_schedulers = checkpoint.get("lr_schedulers") or []
        members = checkpoint.get("members")
        if self.n_members > 1 and isinstance(members, dict):
            if members.get("names") != self.names:
                raise ValueError(
                    f"the checkpoint's members are {members.get('names')}, this sweep's {self.names}"
                )
            self.status = [MemberStatus(**s) for s in members["status"]]

    def checkpoint_dump(self, key: object) -> dict:
        """What ``trainer.save_checkpoint`` would save now, made once per ``key`` (each member's
        checkpoint of one moment takes its part of the same one)."""
        cached = getattr(self, "_dump", None)
        if cached is None or cached[0] != key:
            self._dump = (key, self.trainer._checkpoint_connector.dump_checkpoint(weights_only=False))
        return self._dump[1]

    def member_checkpoint(self, k: int, checkpoint: dict, own: dict[str, dict]) -> dict:
        """Member ``k``'s part of the K-member ``checkpoint`` (what Lightning dumps) as the
        checkpoint its ``fit`` would write: its weights, its rows of the optimizer's state and its
        rates, its schedule, its callbacks' states (``own``: the state of its checkpoint callback,
        under ``fit``'s key), its hyper-parameters and data settings, its status."""
        if self.n_members == 1:
            return checkpoint
        K, names = self.n_members, self.parameter_names()
        stacked = [f"net.W.{i}" for i in range(len(self.net.weights))] + [
            f"net.b.{i}" for i in range(len(self.net.biases))
        ]
        state_dict = {
            f"net.{name}": checkpoint["state_dict"][key][k].clone() for name, key in zip(names, stacked)
        }
        optimizer_states = []
        for saved in checkpoint["optimizer_states"]:
            rows = {i: {key: (t[k].clone() if isinstance(t, Tensor) and t.dim() and t.shape[0] == K else t)
                        for key, t in state.items()} for i, state in saved["state"].items()}  # fmt: skip
            groups = [{key: (float(v[k]) if isinstance(v, Tensor) and v.dim() == 1 and len(v) == K else v)
                       for key, v in group.items()} for group in saved["param_groups"]]  # fmt: skip
            optimizer_states.append({"state": rows, "param_groups": groups})
        callbacks = {}
        for key, state in checkpoint.get("callbacks", {}).items():
            if isinstance(state, dict) and "members" in state and len(state["members"]) == K:
                callbacks[key] = state["members"][k]
        callbacks.update(own)
        schedulers = checkpoint.get("lr_schedulers") or []
        hyper = {key: v for key, v in self.member_hparams[k].items() if not key.startswith("_")}
        record = self.records[k]
        return {
            **{
                key: checkpoint[key]
                for key in ("epoch", "global_step", "pytorch-lightning_version", "loops")
                if key in checkpoint
            },  # fmt: skip
            "state_dict": state_dict,
            "optimizer_states": optimizer_states,
            "lr_schedulers": schedulers[k : k + 1],
            "callbacks": callbacks,
            "hparams_name": "kwargs",
            "hyper_parameters": {**hyper, **record.get("hyper_parameters", {})},
            "datamodule_hyper_parameters": dict(record.get("datamodule_hyper_parameters", {})),
            "member": {"name": self.names[k], **self.status[k].as_dict()},
        }

    def optimizer_hparams(self, k: int = 0) -> dict[str, object]:
        """Member ``k``'s optimizer class and settings, for the HParams tab."""
        opt = self.optimizers(use_pl_optimizer=False)
        out: dict[str, object] = {"optimizer": type(opt).__name__}
        for key, v in opt.defaults.items():
            if isinstance(v, Tensor) and v.dim() == 1:
                v = float(v[k])
            if isinstance(v, (int, float, bool, str)):
                out[key] = v
        return out
