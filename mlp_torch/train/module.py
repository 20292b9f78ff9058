"""The training system: a LightningModule that trains :class:`SigmoidMLP` by the notes' rules.

Manual optimization. Each Lightning training step is one epoch: the data module hands over the
whole training split (already on the device) and the step runs every update of the epoch in a
tight loop, so Lightning's per-step overhead and logging are paid once per epoch, not per update.

The notes' three regimes, chosen by ``batch_size``:

* ``"full"``: batch gradient descent, one update per epoch with the gradient over all ``N``
  training examples. With ``chunk_size`` the set is fed in chunks: each chunk's cost gradient is
  summed with weight ``s`` (``1/N`` for ``reduction="mean"``, 1 for ``"sum"``) and the penalty
  gradient is added once, so the update equals the single full-batch step to float tolerance.
* ``1``: stochastic gradient descent, one update per example, reshuffled each epoch.
* ``b > 1``: mini-batch, one update per ``b`` examples (the last batch may be smaller).

The shuffle order of epoch ``e`` is :func:`mlp_torch.train.loop.epoch_permutation` of ``(seed, e)``, so
a resumed run sees the order an uninterrupted one would.

Data parallel (``--trainer.strategy ddp``, ``W`` processes): every rank gets the whole split and
computes only its shard of each update's batch (:mod:`mlp_torch.train.distributed`); the ranks' cost
gradients are summed by one ``all_reduce`` per update and the penalties' gradient is added once
after it, so the update is the one-process update of the same global batch (``batch_size`` is
the global batch). The epoch's metrics are reduced over the ranks; a cross-check compares each
rank's two gradients of its shard and logs the largest error over the ranks.

What is logged as ``train/J`` (and ``train/cost``, ``train/l1``, ``train/l2``): each example's
cost at the weights it was used with, reduced over the whole training split as ``reduction``
says, plus the penalties averaged over the epoch's updates. For batch gradient descent it is
exactly ``J`` before the epoch's update.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from mlp_torch.data import DTYPES, from_unit_range
from mlp_torch.model.backprop import check_objective_args, output_terms
from mlp_torch.model.costs import COSTS, l1_grad, l1_penalty, l2_penalty
from mlp_torch.model.fused import fused_backprop
from mlp_torch.model.gradcheck import TOLERANCES, relative_error
from mlp_torch.model.network import SigmoidMLP, feedforward
from mlp_torch.model.optim import Momentum
from mlp_torch.train.distributed import max_over_ranks, shard, sum_over_ranks, update_shards
from mlp_torch.train.loop import epoch_permutation
from mlp_torch.train.threads import choose_num_threads, largest_product, use_threads

__all__ = ["CrossCheckError", "MLPModule"]

HISTOGRAM_BINS = 30  # bins of the weight and gradient histograms
NEAR_ZERO = 1e-3  # |w| below this counts as "near zero" in the sparsity/ fractions (L1's effect)
# The defaults were chosen by 5-fold cross-validation on the non-test examples (see the README):
DEFAULT_LR, DEFAULT_ALPHA = 3.0, 0.9  # Momentum's settings when no optimizer is given
DEFAULT_L2 = 1e-4  # weight decay gamma; with lr 3, +0.56 points of held-out accuracy over l2=0, lr 2


class CrossCheckError(RuntimeError):
    """Hand-written and autograd gradients disagree beyond the tolerance during training."""


def _views(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Views of ``flat`` shaped like each of ``like``, laid end to end."""
    views, offset = [], 0
    for t in like:
        views.append(flat[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


def _unhooked(opt: torch.optim.Optimizer) -> bool:
    """``opt`` has :meth:`mlp_torch.optim._NotesOptimizer.update` and no step hook to run."""
    hooks = (_global_optimizer_pre_hooks, _global_optimizer_post_hooks)
    own = (opt._optimizer_step_pre_hooks, opt._optimizer_step_post_hooks)
    return hasattr(opt, "update") and not any(hooks) and not any(own)


def _add_histogram(writer, tag: str, t: Tensor, step: int, bins: int = HISTOGRAM_BINS) -> None:
    """``t``'s histogram in ``bins`` equal bins from its min to its max, counted by torch and
    written as is (``SummaryWriter.add_histogram`` takes milliseconds per tensor: numpy, and a
    thousand exponential bins); nothing for a tensor with inf or NaN, which TensorBoard rejects."""
    t = t.detach().flatten().double()  # (n,)
    stats = torch.stack([t.min(), t.max(), t.sum(), t.dot(t)]).tolist() if t.numel() else []
    if not stats or not all(map(math.isfinite, stats)):
        return
    low, high, total, squares = stats
    if high == low:  # one value: one bin around it
        low, high, bins = low - 0.5, high + 0.5, 1
    counts = torch.histc(t, bins, min=low, max=high)  # (bins,)
    limits = torch.linspace(low, high, bins + 1, dtype=torch.float64)[1:]  # (bins,): each bin's right edge
    writer.add_histogram_raw(tag, low, high, t.numel(), total, squares, limits, counts, global_step=step)


def _positive_int(name: str, value, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


class MLPModule(L.LightningModule):
    """Train a sigmoid MLP with hand-written backprop (or autograd), cross-checked as it runs.

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
            product (:func:`mlp_torch.threads.choose_num_threads`: 1 for small networks).
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
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.objective_kw = dict(cost=cost, l1=l1, l2=l2)  # plain attributes: read per update
        self.chunk_size = chunk_size
        self.crosscheck_tolerance = crosscheck_tolerance or TOLERANCES[DTYPES[dtype]]["manual_vs_autograd"]
        self.epoch_stats: dict[str, float] = {}  # the last epoch's J etc., read by the callbacks

    def forward(self, x: Tensor) -> Tensor:
        """``y_hat``, ``(n, n_outputs)``, in the sigmoid's range."""
        return self.net(x)

    # ---- training -------------------------------------------------------------------------
    #
    # The lean loop. The network's parameters are views of one flat tensor ``self.flat``, laid out
    # ``[W_1, ..., W_L, b_1, ..., b_L]``, and the optimizer updates that one tensor (every rule of
    # mlp_torch.optim is elementwise, so this is the update of each parameter); the gradient is
    # written into ``self.flat_grad``, laid out alike. Per update the loop only computes: the
    # penalties' sums at the weights used (one op each, when on), the batch's gradient, the step.
    # Each example's ``z_L`` is kept, so its cost at the weights it was used with (train/J) is
    # computed once per epoch; nothing is read back to the host before the epoch ends.

    def _flat_order(self) -> dict[str, Tensor]:
        """The parameters by name in ``self.flat``'s order: all weights, then all biases."""
        layers = list(enumerate(self.net.layers))
        return {f"layers.{i}.{k}": getattr(layer, k) for k in ("weight", "bias") for i, layer in layers}

    def _flatten_parameters(self) -> None:
        """Make the parameters views of ``self.flat`` (kept if they already are; redone, same
        values, after they were moved or cast) and lay out ``self.flat_grad`` alike."""
        params = list(self._flat_order().values())
        flat = getattr(self, "flat", None)
        if flat is not None and [p.data_ptr() for p in params] == self._flat_pointers:
            return
        data = torch.cat([p.detach().reshape(-1) for p in params])  # (P,)
        if flat is None:
            self.flat = data
        else:
            flat.data = data  # the optimizer holds this tensor: keep it
        for p, view in zip(params, _views(self.flat, params)):
            p.data = view
        self.flat_grad = torch.zeros_like(self.flat)  # (P,)
        self.grads = _views(self.flat_grad, params)  # [dJ/dW_1, ..., dJ/dW_L, dJ/db_1, ..., dJ/db_L]
        self.weights, self.biases = self.net.weights, self.net.biases  # the same tensors, listed once
        self._flat_pointers = [p.data_ptr() for p in params]  # where each view starts
        self.n_weights = sum(W.numel() for W in self.weights)
        self.flat_weights = self.flat[: self.n_weights]  # (P_w,): all weights, ...
        self.flat_weight_grads = self.flat_grad[: self.n_weights]  # (P_w,): ... and their gradients

    def batch_gradient(
        self, x: Tensor, y: Tensor, scale: float, source: str, out: Tensor, z_out: Tensor | None = None
    ) -> None:
        """Write ``dJ/dp`` of the batch ``(x, y)``, each example's cost weighted by ``scale`` and
        the penalties added once, into ``out`` (laid out as ``self.flat``); the batch is fed in
        chunks of ``chunk_size`` if set. ``z_out`` ``(n, n_out)``: where to keep each example's
        ``z_L``. ``source``: ``"manual"`` (hand-written, :func:`mlp_torch.fused.fused_backprop`)
        or ``"autograd"``. Call it under ``torch.no_grad()``."""
        self._chunked_data_gradient(x, y, scale, source, out, z_out)
        self._add_penalty_gradient(out, source)

    def _chunked_data_gradient(
        self, x: Tensor, y: Tensor, scale: float, source: str, out: Tensor, z_out: Tensor | None
    ) -> None:
        """The gradient of ``scale * sum_i C_i`` over the batch into ``out``, in chunks of
        ``chunk_size`` if set."""
        grads = self.grads if out is self.flat_grad else _views(out, self.grads)
        n, chunk = x.shape[0], self.chunk_size
        if chunk is None or chunk >= n:  # (also an empty shard: zero gradients)
            self._data_gradient(x, y, scale, source, grads, z_out)
            return
        part = _views(torch.empty_like(out), self.grads)
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            z = None if z_out is None else z_out[rows]
            self._data_gradient(x[rows], y[rows], scale, source, part if start else grads, z)
            if start:
                torch._foreach_add_(grads, part)  # sum the chunks' gradients

    def _data_gradient(self, x, y, scale, source, grads: list[Tensor], z_out: Tensor | None) -> None:
        """The gradient of ``scale * sum_i C_i`` into ``grads`` (ordered as ``self.grads``)."""
        weights, biases, cost = self.weights, self.biases, self.objective_kw["cost"]
        L = len(weights)
        if source == "manual":
            fused_backprop(weights, biases, x, y, grads[:L], grads[L:], cost=cost, scale=scale, z_out=z_out)
            return
        with torch.enable_grad():
            zs, activations = feedforward(weights, biases, x)
            data = scale * COSTS[cost].fn(zs[-1], activations[-1], y).sum()
            torch._foreach_copy_(grads, torch.autograd.grad(data, [*weights, *biases]))
        if z_out is not None:
            z_out.copy_(zs[-1])

    def _add_penalty_gradient(self, out: Tensor, source: str) -> None:
        """Add the penalties' gradient to the weights' part of ``out``, once for all layers."""
        l1, l2 = self.objective_kw["l1"], self.objective_kw["l2"]
        if not (l1 or l2):
            return
        w = self.flat_weights  # (P_w,): all weights
        g = self.flat_weight_grads if out is self.flat_grad else out[: self.n_weights]  # (P_w,): their grads
        if source == "manual":
            if l1:
                g.add_(l1_grad(w, l1))
            if l2:
                g.add_(w, alpha=2 * l2)  # + l2_grad(w) = 2 l2 w, in one op
            return
        weights = [w.detach().view(1, -1).requires_grad_()]  # all weights as one (1, P_w) matrix
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(l1_penalty(weights, l1) + l2_penalty(weights, l2), weights)
        g.add_(grad.view(-1))

    def _crosscheck(self, x: Tensor, y: Tensor, scale: float, step: int) -> float:
        """Compare the data gradient just computed (``self.flat_grad``, this rank's share of the
        batch) plus the penalties' with the other source's gradient of the same examples; the
        largest per-parameter relative error, the maximum over the ranks."""
        source = self.hparams.grad_source
        mine, other = self.flat_grad.clone(), torch.empty_like(self.flat_grad)
        self._add_penalty_gradient(mine, source)
        self.batch_gradient(x, y, scale, "autograd" if source == "manual" else "manual", other)
        manual, auto = (mine, other) if source == "manual" else (other, mine)
        pairs = zip(_views(manual, self.grads), _views(auto, self.grads))
        errors = [relative_error(m, a) for m, a in pairs]
        errors = max_over_ranks(torch.tensor(errors, dtype=torch.float64, device=mine.device))  # (n_params,)
        names = list(self._flat_order())
        worst = float(errors.max())
        name = names[int(errors.argmax())]
        if not worst <= self.crosscheck_tolerance:
            msg = (
                f"hand-written and autograd gradients disagree at update {step}: parameter "
                f"{name} has relative error {worst:.3g} > tolerance {self.crosscheck_tolerance:g}"
            )
            if self.hparams.crosscheck_action == "error":
                raise CrossCheckError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return worst

    def _set_threads(self, rows: int) -> None:
        """Intra-op threads by :func:`mlp_torch.threads.choose_num_threads` (or ``num_threads``),
        the machine's cores shared among its DDP processes on the CPU; logged once."""
        decided = getattr(self, "_threads_decided", None)  # (rows, threads) of the last epoch
        if decided is not None and decided[0] == rows and decided[1] == torch.get_num_threads():
            return  # every epoch after the first: nothing to choose, set or log
        threads = self.hparams.num_threads or choose_num_threads(self.net.sizes, rows)
        if not self.hparams.num_threads and self.flat.device.type == "cpu" and self.trainer.num_devices > 1:
            threads = max(1, threads // self.trainer.num_devices)  # the processes on this machine
        line = use_threads(threads, largest_product(self.net.sizes, rows), bool(self.hparams.num_threads))
        self._threads_decided = (rows, threads)
        if getattr(self, "_threads_logged", None) != threads:
            self._threads_logged = threads
            rank_zero_info(line)

    def setup(self, stage: str) -> None:
        self._threads_decided = None  # a new run (another trainer, devices): choose again
        world = self.trainer.world_size
        self.check_world_size(world)
        if world > 1:  # the module reduces its epoch metrics over the ranks itself: Lightning's hint is moot
            warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(")

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

    def _epoch_shards(
        self, n: int, size: int, device
    ) -> tuple[Tensor | None, list[slice], list[int], Tensor]:
        """This rank's part of the epoch: the training examples its updates use, in use order
        ``(n_local,)`` (``None``: all ``n`` in stored order), the rows of each update in them, and
        each update's global batch size (a list and a ``(K,)`` tensor)."""
        hp = self.hparams
        rank, world = self._rank_and_world()
        order = None if hp.batch_size == "full" else epoch_permutation(n, hp.seed, self.current_epoch)  # (n,)
        shards = update_shards(n, size, rank, world)  # positions in the epoch's order
        sizes = [min(size, n - start) for start in range(0, n, size)]
        counts = torch.tensor(sizes, device=device)  # (K,): each update's global batch size
        if world > 1:
            positions = torch.cat([torch.arange(s.start, s.stop) for s in shards])  # (n_local,)
            order = positions if order is None else order[positions]
        rows, start = [], 0
        for s in shards:
            rows.append(slice(start, start + s.stop - s.start))
            start = rows[-1].stop
        return (None if order is None else order.to(device)), rows, sizes, counts

    def _epoch_chunks(self, rows: list[slice]) -> list[range]:
        """The epoch's updates in chunks of consecutive updates whose examples fit the data
        module's ``train_chunk_rows`` (streamed training); one chunk of all when not streamed."""
        limit = getattr(self.trainer.datamodule, "train_chunk_rows", None)
        if limit is None:
            return [range(len(rows))]
        chunks, first = [], 0
        for k, r in enumerate(rows):
            if r.stop - r.start > limit:
                raise ValueError(
                    f"one update's {r.stop - r.start} examples do not fit the memory budget of "
                    f"{limit} training examples; use a smaller batch_size or a larger --data.memory_budget_mb"
                )
            if r.stop - rows[first].start > limit:
                chunks.append(range(first, k))
                first = k
        return [*chunks, range(first, len(rows))]

    def _to_device(self, x: Tensor, y: Tensor, index: Tensor | None, y_out: Tensor) -> tuple[Tensor, Tensor]:
        """Examples ``index`` of the host-held split ``(x, y)`` on the device (streamed
        training); ``y`` is also kept in ``y_out`` for the epoch's ``J``."""
        index = index.cpu()  # (m,)
        xc = x[index].to(self.flat.device, non_blocking=True)  # (m, n_in)
        y_out.copy_(y[index], non_blocking=True)  # (m, n_out)
        return xc, y_out

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch  # the whole training split: (N, n_in), (N, n_out)
        hp = self.hparams
        n = x.shape[0]
        size = n if hp.batch_size == "full" else min(hp.batch_size, n)
        self._flatten_parameters()
        device = self.flat.device  # the data is on the host when streamed
        index, rows, sizes, counts = self._epoch_shards(n, size, device)
        chunks = self._epoch_chunks(rows)
        streamed = len(chunks) > 1 or x.device != device
        if streamed and index is None:
            index = torch.arange(n, device=device)  # (n,)
        if index is not None and not streamed:
            x, y = x[index], y[index]  # (n_local, n_in), (n_local, n_out): this rank's examples in use order
        self.epoch_examples = torch.arange(n, device=device) if index is None else index  # (n_local,)
        self._set_threads(min(max(r.stop - r.start for r in rows), hp.chunk_size or size))
        self.flat.grad = self.flat_grad
        n_local = rows[-1].stop
        y_local = (
            y if len(chunks) == 1 else y.new_empty((n_local, y.shape[1]), device=device)
        )  # (n_local, n_out)
        z_out = torch.empty_like(
            y_local
        )  # (n_local, n_out): each example's z_L at the weights it was used with
        sums = self.flat.new_zeros(2, len(rows))  # (2, K): sum |w| and sum w^2 at each update's weights
        l1, l2 = hp.l1, hp.l2
        l1_at, l2_at = (row.unbind() if on else None for row, on in zip(sums.unbind(0), (l1, l2)))
        w = self.flat_weights  # (P_w,): all weights
        opt = self.optimizers(use_pl_optimizer=False)
        step = opt.update if _unhooked(opt) else opt.step
        mean, source, every = hp.reduction == "mean", hp.grad_source, hp.crosscheck_every_n_steps
        first, distributed = self.global_step, self._rank_and_world()[1] > 1
        self.crosscheck_errors: list[float] = []
        with torch.no_grad():
            for updates in chunks:  # one chunk (all of this rank's examples) unless streamed
                lo, hi = rows[updates.start].start, rows[updates.stop - 1].stop
                xc, yc = self._to_device(x, y, index[lo:hi], y_local[lo:hi]) if streamed else (x, y)
                lengths = [rows[k].stop - rows[k].start for k in updates]
                batches = zip(updates, xc.split(lengths), yc.split(lengths), z_out[lo:hi].split(lengths))
                for k, xb, yb, zb in batches:  # update k's examples, targets and z_L
                    if l1:
                        torch.linalg.vector_norm(w, 1, out=l1_at[k])
                    if l2:
                        torch.dot(w, w, out=l2_at[k])
                    scale = 1.0 / sizes[k] if mean else 1.0  # the GLOBAL batch's scale
                    self._chunked_data_gradient(xb, yb, scale, source, self.flat_grad, zb)
                    if every and (first + k) % every == 0:
                        self.crosscheck_errors.append(self._crosscheck(xb, yb, scale, first + k))
                    if distributed:
                        sum_over_ranks(self.flat_grad)  # the whole batch's cost gradient
                    self._add_penalty_gradient(self.flat_grad, source)  # counted once
                    step()
            self._count_updates(len(rows))
            local = counts.new_tensor([r.stop - r.start for r in rows])  # (K,)
            which = torch.repeat_interleave(local, output_size=n_local)  # (n_local,): the update of each
            train, js = self._epoch_objective(z_out, y_local, which, counts, sums)
        nonfinite = torch.nonzero(~torch.isfinite(js))  # (k, 1): the updates whose J was inf or NaN
        self.epoch_stats = {
            "J": float(train["J"]),
            "first_nonfinite_update": int(nonfinite[0]) if len(nonfinite) else -1,
            "updates": len(rows),
            "chunks": len(chunks) if streamed else 0,  # streamed: the training split's chunks
            "lr": opt.param_groups[0]["lr"],
        }
        metrics = {f"train/{k}": v for k, v in train.items()}
        metrics["lr"] = self.epoch_stats["lr"]
        for i, W in enumerate(self.net.weights):
            metrics[f"sparsity/layer_{i}"] = (W.abs() < NEAR_ZERO).float().mean()
        if self.crosscheck_errors:
            metrics["gradcheck/max_rel_err"] = max(self.crosscheck_errors)
        self.log_epoch(metrics)
        self._log_histograms()

    def log_epoch(self, metrics: dict[str, Tensor | float]) -> None:
        """Log epoch-level scalars at step = the epoch (as ``self.log(..., on_epoch=True)`` does
        for one training step per epoch) to every logger and to ``trainer.callback_metrics``, in
        one go: ``self.log`` costs about a millisecond per name and call (it moves its whole
        record of each metric to the device every time), more than an epoch of updates on small
        data."""
        tensors = [v.detach() for v in metrics.values() if isinstance(v, Tensor)]
        values = iter(torch.stack(tensors).tolist() if tensors else [])  # one read from the device
        scalars = {k: next(values) if isinstance(v, Tensor) else float(v) for k, v in metrics.items()}
        self.trainer.callback_metrics.update(
            {k: v.detach() if isinstance(v, Tensor) else torch.tensor(v) for k, v in metrics.items()}
        )
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                if self.trainer.is_global_zero:  # one event for all names: each one wakes its writer thread
                    values = [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
                    summary = Summary(value=values)
                    logger.experiment._get_file_writer().add_summary(summary, self.current_epoch)
            else:
                logger.log_metrics(scalars, step=self.current_epoch)

    def _epoch_objective(
        self, z: Tensor, y: Tensor, which: Tensor, counts: Tensor, sums: Tensor
    ) -> tuple[dict, Tensor]:
        """The epoch's ``{"J", "cost", "l1", "l2"}`` (see the module docstring) and the ``J`` of
        each update ``(K,)``, from each of this rank's examples' ``z_L`` ``(n_local, n_out)``, the
        update each fed ``which`` ``(n_local,)``, the global batch sizes ``counts`` ``(K,)`` and the
        penalties' sums ``(2, K)``; the costs are summed over the ranks (one all-reduce)."""
        hp = self.hparams
        costs = COSTS[hp.cost].fn(z, torch.sigmoid(z), y)  # (n_local,): C_i at the weights i was used with
        per_update = costs.new_zeros(sums.shape[1]).index_add_(0, which, costs)  # (K,)
        per_update = sum_over_ranks(per_update)  # (K,): the whole batches' cost sums
        cost = per_update.sum()
        if hp.reduction == "mean":
            cost = cost / counts.sum()
            per_update = per_update / counts  # (K,)
        penalties = sums * sums.new_tensor([[hp.l1], [hp.l2]])  # (2, K)
        l1, l2 = penalties.mean(dim=1)
        return {"cost": cost, "l1": l1, "l2": l2, "J": cost + l1 + l2}, per_update + penalties.sum(0)

    def _count_updates(self, k: int) -> None:
        """Count ``k`` optimizer steps in ``global_step``, as Lightning's optimizer wrapper would
        one by one (the loop steps the optimizer itself, without the wrapper's per-step cost)."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.total.increment_by(k)
        progress.current.increment_by(k)

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _log_histograms(self) -> None:
        """Histograms of weights and gradients (the epoch's last update's), every
        ``histograms_every_n_epochs`` epochs (from the first)."""
        every = self.hparams.histograms_every_n_epochs
        if not (every and self.current_epoch % every == 0 and isinstance(self.logger, TensorBoardLogger)):
            return
        tb = self.logger.experiment
        for (name, p), g in zip(self._flat_order().items(), self.grads):
            for kind, t in (("weights", p.detach()), ("grads", g)):
                _add_histogram(tb, f"{kind}/{name}", t, self.current_epoch)

    # ---- evaluation -----------------------------------------------------------------------

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        """``{stage}/J`` and ``{stage}/acc`` (classification) or ``{stage}/mse`` (regression, in the
        target's units) of a whole split, which the data module serves as one batch; under DDP
        each rank evaluates its shard (:func:`mlp_torch.distributed.shard`) and the sums are
        reduced over the ranks, so every rank logs the whole split's values."""
        x, y = batch
        n = x.shape[0]
        scale = 1.0 / n if self.hparams.reduction == "mean" else 1.0
        rows = shard(n, *self._rank_and_world())
        x, y = x[rows], y[rows]  # (n_rank, n_in), (n_rank, n_out)
        zs, activations = feedforward(self.net.weights, self.net.biases, x)
        y_hat = activations[-1]  # (n_rank, n_out)
        terms = output_terms(self.net.weights, zs[-1], y_hat, y, scale=scale, **self.objective_kw)
        if self._rank_and_world()[1] > 1:
            cost = self.trainer.strategy.reduce(terms["cost"].clone(), reduce_op="sum")
            terms["J"] = cost + terms["l1"] + terms["l2"]
        if self.hparams.task == "classification":
            name, count = "acc", n
            total = (y_hat.argmax(dim=1) == y.argmax(dim=1)).sum().to(y.dtype)  # right answers
        else:
            low, high = self.hparams.target_low, self.hparams.target_high
            error = from_unit_range(y_hat, low, high) - from_unit_range(y, low, high)  # (n_rank, k)
            name, count, total = "mse", n * y.shape[1], (error * error).sum()
        if self._rank_and_world()[1] > 1:
            total = self.trainer.strategy.reduce(total.clone(), reduce_op="sum")
        metrics = {f"{stage}/J": terms["J"], f"{stage}/{name}": total / count}
        if stage == "val" and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.log_epoch(metrics)  # each epoch of a fit: in one cheap call (ModelCheckpoint reads val/J)
        else:
            self.log_dict(metrics, prog_bar=stage == "val")  # validate and test return what is logged

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """The outputs ``y_hat`` ``(n, k)``: one per class (classification), or the values in the
        target's units (regression)."""
        y_hat = self.net(batch[0])
        if self.hparams.task == "classification":
            return y_hat
        return from_unit_range(y_hat, self.hparams.target_low, self.hparams.target_high)

    def configure_optimizers(self):
        """The optimizer of one tensor, ``self.flat``, of which the parameters are views."""
        self._flatten_parameters()
        if self.optimizer_factory is None:
            optimizer = Momentum([self.flat], lr=DEFAULT_LR, alpha=DEFAULT_ALPHA)
        else:
            optimizer = self.optimizer_factory([self.flat])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def optimizer_hparams(self) -> dict[str, object]:
        """The optimizer's class and settings, for the HParams tab."""
        opt = self.optimizers(use_pl_optimizer=False)
        out: dict[str, object] = {"optimizer": type(opt).__name__}
        out.update({k: v for k, v in opt.defaults.items() if isinstance(v, (int, float, bool, str))})
        return out
