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

The shuffle order of epoch ``e`` is :func:`mlp_torch.data.epoch_permutation` of ``(seed, e)``, so
a resumed run sees the order an uninterrupted one would.

What is logged as ``train/J`` (and ``train/cost``, ``train/l1``, ``train/l2``): each example's
cost at the weights it was used with, reduced over the whole training split as ``reduction``
says, plus the penalties averaged over the epoch's updates. For batch gradient descent it is
exactly ``J`` before the epoch's update.
"""

from __future__ import annotations

import warnings
from typing import Literal

import lightning.pytorch as L
import torch
import torchmetrics
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from mlp_torch.backprop import backprop, check_objective_args, objective_terms
from mlp_torch.data import DTYPES, epoch_permutation, from_unit_range
from mlp_torch.gradcheck import TOLERANCES, relative_error
from mlp_torch.network import SigmoidMLP
from mlp_torch.optim import Momentum

__all__ = ["CrossCheckError", "MLPModule"]

NEAR_ZERO = 1e-3  # |w| below this counts as "near zero" in the sparsity/ fractions (L1's effect)
# The defaults were chosen by 5-fold cross-validation on the non-test examples (see the README):
DEFAULT_LR, DEFAULT_ALPHA = 3.0, 0.9  # Momentum's settings when no optimizer is given
DEFAULT_L2 = 1e-4  # weight decay gamma; with lr 3, +0.56 points of held-out accuracy over l2=0, lr 2


class CrossCheckError(RuntimeError):
    """Hand-written and autograd gradients disagree beyond the tolerance during training."""


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
            :mod:`mlp_torch.costs`).
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
        histograms: log weight and gradient histograms each epoch.
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
        histograms: bool = True,
    ) -> None:
        super().__init__()
        check_objective_args(cost, l1, l2, reduction)
        if batch_size != "full":
            _positive_int("batch_size", batch_size)
        if chunk_size is not None:
            _positive_int("chunk_size", chunk_size)
        _positive_int("crosscheck_every_n_steps", crosscheck_every_n_steps, allow_zero=True)
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
        self.objective_kw = dict(cost=cost, l1=l1, l2=l2)
        self.crosscheck_tolerance = crosscheck_tolerance or TOLERANCES[DTYPES[dtype]]["manual_vs_autograd"]
        if task == "classification":
            metric = lambda: torchmetrics.Accuracy(task="multiclass", num_classes=n_outputs)  # noqa: E731
        else:
            metric = torchmetrics.MeanSquaredError
        self.val_metric, self.test_metric = metric(), metric()
        self.epoch_stats: dict[str, float] = {}  # the last epoch's J etc., read by the callbacks

    def forward(self, x: Tensor) -> Tensor:
        """``y_hat``, ``(n, n_outputs)``, in the sigmoid's range."""
        return self.net(x)

    # ---- training -------------------------------------------------------------------------

    def _gradients(self, x: Tensor, y: Tensor, source: str, scale: float, penalties: bool):
        """``(terms, grads)`` of the objective on one batch or chunk: the cost scaled by ``scale``,
        the penalties only if ``penalties``; grads ordered as ``net.parameters()``."""
        kw = dict(self.objective_kw)
        if not penalties:
            kw.update(l1=0.0, l2=0.0)
        weights, biases = self.net.weights, self.net.biases
        if source == "manual":
            bp = backprop(weights, biases, x, y, scale=scale, **kw)
            grads = [g for gW, gb in zip(bp.grad_W, bp.grad_b) for g in (gW, gb)]
            return (bp.J, bp.cost, bp.l1, bp.l2), grads
        with torch.enable_grad():
            terms = objective_terms(weights, biases, x, y, scale=scale, **kw)
            grads = list(torch.autograd.grad(terms["J"], list(self.net.parameters())))
        return tuple(terms[k].detach() for k in ("J", "cost", "l1", "l2")), grads

    def _crosscheck(self, manual: list[Tensor], auto: list[Tensor]) -> float:
        errors = {
            name: relative_error(m, a) for (name, _), m, a in zip(self.net.named_parameters(), manual, auto)
        }
        name, worst = max(errors.items(), key=lambda kv: kv[1])
        if not worst <= self.crosscheck_tolerance:
            msg = (
                f"hand-written and autograd gradients disagree at update {self.global_step}: parameter "
                f"{name} has relative error {worst:.3g} > tolerance {self.crosscheck_tolerance:g}"
            )
            if self.hparams.crosscheck_action == "error":
                raise CrossCheckError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return worst

    def _update(self, opt, x: Tensor, y: Tensor, scale: float, chunk: int) -> tuple[Tensor, ...]:
        """One optimizer step on the batch ``(x, y)``, its gradient summed over chunks of
        ``chunk`` examples; returns the batch's ``(J, cost, l1, l2)``."""
        every = self.hparams.crosscheck_every_n_steps
        check = every > 0 and self.global_step % every == 0
        source = self.hparams.grad_source
        sources = ("manual", "autograd") if check else (source,)
        totals: dict[str, list[Tensor]] = {}
        terms = None
        for start in range(0, x.shape[0], chunk):
            xc, yc = x[start : start + chunk], y[start : start + chunk]  # (c, n_in), (c, n_out)
            for s in sources:
                t, grads = self._gradients(xc, yc, s, scale, penalties=start == 0)
                if s == source:
                    terms = t if terms is None else tuple(a + b for a, b in zip(terms, t))
                totals[s] = grads if s not in totals else [a + b for a, b in zip(totals[s], grads)]
        if check:
            self.crosscheck_errors.append(self._crosscheck(totals["manual"], totals["autograd"]))
        for p, g in zip(self.net.parameters(), totals[source]):
            p.grad = g
        opt.step()
        return terms

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch  # the whole training split: (N, n_in), (N, n_out)
        n = x.shape[0]
        mean = self.hparams.reduction == "mean"
        size = n if self.hparams.batch_size == "full" else min(self.hparams.batch_size, n)
        chunk = self.hparams.chunk_size or size
        if self.hparams.batch_size == "full":
            batches = [(x, y)]
        else:
            order = epoch_permutation(n, self.hparams.seed, self.current_epoch, device=x.device)
            batches = [(x[i], y[i]) for i in order.split(size)]  # (b, n_in), (b, n_out)
        self.crosscheck_errors: list[float] = []
        js = torch.empty(len(batches), dtype=x.dtype, device=x.device)  # J of every update
        cost = torch.zeros((), dtype=x.dtype, device=x.device)
        penalty = torch.zeros(2, dtype=x.dtype, device=x.device)
        opt = self.optimizers()
        for k, (xb, yb) in enumerate(batches):
            b = xb.shape[0]
            J, c, p1, p2 = self._update(opt, xb, yb, 1.0 / b if mean else 1.0, chunk)
            js[k] = J
            cost += c * b / n if mean else c  # each example's cost once, reduced over all N
            penalty += torch.stack((p1, p2)) / len(batches)
        train = {"cost": cost, "l1": penalty[0], "l2": penalty[1], "J": cost + penalty.sum()}
        nonfinite = torch.nonzero(~torch.isfinite(js))  # (k, 1): the updates whose J was inf or NaN
        self.epoch_stats = {
            "J": float(train["J"]),
            "first_nonfinite_update": int(nonfinite[0]) if len(nonfinite) else -1,
            "updates": len(batches),
            "lr": opt.param_groups[0]["lr"],
        }
        self.log_dict({f"train/{k}": v for k, v in train.items()}, on_step=False, on_epoch=True)
        self.log("lr", self.epoch_stats["lr"], on_step=False, on_epoch=True)
        if self.crosscheck_errors:
            self.log("gradcheck/max_rel_err", max(self.crosscheck_errors), on_step=False, on_epoch=True)
        self._log_layers()

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _log_layers(self) -> None:
        """Per layer: the fraction of weights near zero; histograms of weights and gradients (the
        last update's). Done in the training step: Lightning drops ``.grad`` before validation."""
        for i, W in enumerate(self.net.weights):
            self.log(
                f"sparsity/layer_{i}", (W.abs() < NEAR_ZERO).float().mean(), on_step=False, on_epoch=True
            )
        if not (self.hparams.histograms and isinstance(self.logger, TensorBoardLogger)):
            return
        tb = self.logger.experiment
        for name, p in self.net.named_parameters():
            for kind, t in (("weights", p.detach()), ("grads", p.grad)):
                if t is not None and bool(torch.isfinite(t).all()):  # TensorBoard rejects inf/NaN
                    try:
                        tb.add_histogram(f"{kind}/{name}", t, self.current_epoch)
                    except ValueError:  # values so large that the bin edges overflow
                        pass

    # ---- evaluation -----------------------------------------------------------------------

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metric) -> None:
        x, y = batch
        scale = 1.0 / x.shape[0] if self.hparams.reduction == "mean" else 1.0
        terms = objective_terms(self.net.weights, self.net.biases, x, y, scale=scale, **self.objective_kw)
        y_hat = self.net(x)
        if self.hparams.task == "classification":
            metric(y_hat.argmax(dim=1), y.argmax(dim=1))
            name = "acc"
        else:
            low, high = self.hparams.target_low, self.hparams.target_high
            metric(from_unit_range(y_hat, low, high), from_unit_range(y, low, high))
            name = "mse"
        self.log(f"{stage}/J", terms["J"], prog_bar=stage == "val")
        self.log(f"{stage}/{name}", metric, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metric)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metric)

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Class indices (classification) or values in the target's units (regression)."""
        y_hat = self.net(batch[0])
        if self.hparams.task == "classification":
            return y_hat.argmax(dim=1)
        return from_unit_range(y_hat, self.hparams.target_low, self.hparams.target_high)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            optimizer = Momentum(self.net.parameters(), lr=DEFAULT_LR, alpha=DEFAULT_ALPHA)
        else:
            optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def optimizer_hparams(self) -> dict[str, object]:
        """The optimizer's class and settings, for the HParams tab."""
        opt = self.optimizers(use_pl_optimizer=False)
        out: dict[str, object] = {"optimizer": type(opt).__name__}
        out.update({k: v for k, v in opt.defaults.items() if isinstance(v, (int, float, bool, str))})
        return out
