r"""The notes' update rules as ``torch.optim.Optimizer`` subclasses.

Which optimizer is which rule of the notes:

- :class:`GradientDescent` is eq. 1, :math:`w \leftarrow w - \eta\, \partial C / \partial w`.
  Batch, stochastic and mini-batch gradient descent are this one rule fed different gradients;
  the training code decides how many examples feed one step.
- :class:`Momentum` is the notes' damped momentum rule,
  :math:`w(m+1) = w(m) + (1-\alpha)\,\Delta w_{bp}(m) + \alpha\,\Delta w(m-1)`.
- :class:`HeavyBall` is not in the notes: it is the conventional momentum of
  ``torch.optim.SGD`` (and its Nesterov variant), offered so that users can compare.

All of them work as any PyTorch optimizer does: param groups, ``step(closure)``, ``zero_grad``,
``state_dict()``/``load_state_dict()`` and the schedulers of ``torch.optim.lr_scheduler``.
Parameters whose ``.grad`` is None are skipped and get no state.

Stacked members (see :mod:`mlp_torch.model.network`): ``lr`` and ``alpha`` may also be ``(K,)``
tensors, one value per member, for parameters with a leading member dimension ``(K, ...)``; each
member then follows its own rule, in the same lines of code (a sweep; no scheduler then).

To update many parameters at once, hand an optimizer one flat tensor of which the parameters are
views (as :class:`mlp_torch.module.MLPModule` does): every rule here is elementwise, so one update
of the flat tensor is the update of each view. Loops that step thousands of times per second can
call :meth:`update`: ``step()`` without its closure, step hooks and profiler record.
"""

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from mlp_torch.model.network import per_member

__all__ = ["GradientDescent", "Momentum", "HeavyBall"]


def _numbers(value: float | Tensor) -> list[float]:
    """A setting's values: the number itself, or each member's from a ``(K,)`` float tensor."""
    if isinstance(value, Tensor) and value.dim() == 1 and value.is_floating_point():
        return value.tolist()
    return [value]


def _check_lr(lr: float | Tensor) -> None:
    for v in _numbers(lr):
        if not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0):
            raise ValueError(f"Invalid learning rate: {v} (must be a finite number > 0)")


def _check_alpha(alpha: float | Tensor) -> None:
    for v in _numbers(alpha):
        if not (isinstance(v, numbers.Real) and 0 <= v < 1):
            raise ValueError(f"Invalid momentum alpha: {v} (must be a number with 0 <= alpha < 1)")


def _add_scaled(t: Tensor, x: Tensor, c: float | Tensor) -> Tensor:
    """``t += c * x`` in place, in one pass, for a number ``c`` or a per-member tensor."""
    return t.addcmul_(x, c) if isinstance(c, Tensor) else t.add_(x, alpha=c)


class _NotesOptimizer(Optimizer):
    """What the optimizers below share: argument checks, the closure, the loop over grads."""

    def add_param_group(self, param_group: dict) -> None:
        # Called for every group, including those built in __init__: check each group's own values.
        group = {**self.defaults, **param_group}
        _check_lr(group["lr"])
        if "alpha" in group:
            _check_alpha(group["alpha"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Perform one update of every parameter that has a gradient.

        Args:
            closure: optional; re-evaluates the model (under ``torch.enable_grad()``), calls
                ``backward()`` and returns the loss, which ``step`` then returns.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.update()
        return loss

    def update(self) -> None:
        """The update of :meth:`step` alone: no closure, no step hooks, no profiler record."""
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, p.grad, group)

    def _update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        raise NotImplementedError


class GradientDescent(_NotesOptimizer):
    r"""Gradient descent, eq. 1 of the notes.

    .. math::
        w \leftarrow w - \eta\, g, \qquad g = \frac{\partial C}{\partial w}

    with :math:`\eta` the learning rate ``lr``. It keeps no state.

    Args:
        params: the parameters to optimize, or dicts defining param groups.
        lr: learning rate :math:`\eta`, a finite number > 0.

    Example:
        >>> opt = GradientDescent(model.parameters(), lr=0.5)  # doctest: +SKIP
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()  # doctest: +SKIP
    """

    def __init__(self, params, lr: float) -> None:
        _check_lr(lr)
        super().__init__(params, {"lr": lr})

    def _update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        _add_scaled(p, grad, -per_member(group["lr"], p))  # w <- w - lr * g


class Momentum(_NotesOptimizer):
    r"""The notes' damped momentum rule.

    .. math::
        \begin{aligned}
        \Delta w_{bp}(m) &= -\eta(m)\, g(m)
            && \text{the plain gradient step (eq. 1)} \\
        \Delta w(m) &= (1-\alpha)\, \Delta w_{bp}(m) + \alpha\, \Delta w(m-1),
            \qquad \Delta w(-1) = 0 \\
        w(m+1) &= w(m) + \Delta w(m)
        \end{aligned}

    with :math:`0 \le \alpha < 1`; :math:`\alpha = 0` is plain gradient descent.

    **State.** Each parameter's state holds ``"dw"``, the last weight change
    :math:`\Delta w(m-1)` itself, not a velocity of gradients. So a learning rate changed between
    steps (by a scheduler, or by hand in ``param_groups``) enters only through
    :math:`\Delta w_{bp}(m)`, while the earlier step is reused as it was taken, as the formula
    says; a buffer of gradients multiplied by the *current* lr would rescale old steps. For the
    same reason a resumed ``state_dict()`` continues the run exactly.

    **First step, and** ``torch.optim.SGD``. We start from :math:`\Delta w(-1) = 0`, so the first
    step is :math:`(1-\alpha)\,\eta\, g(0)`. ``SGD(lr, momentum=alpha, dampening=alpha)`` is the
    same rule (its buffer is :math:`-\Delta w / \eta`) *only* if its momentum buffer started at
    zero; by default SGD starts the buffer at the raw gradient, undamped, so its first step is
    :math:`\eta\, g(0)`, :math:`1/(1-\alpha)` times ours (10 times for :math:`\alpha = 0.9`), and
    that extra push decays over the next steps. It matters: on scikit-learn's digits (64-30-10
    sigmoid net, quadratic cost, mini-batches of 10, :math:`\alpha = 0.9`), ``lr = 1``, the best
    of {0.3, 1, 3, 10, 30} for this rule, makes SGD's default saturate the output sigmoids: after
    20 steps 86-100 % of the output activations lie beyond 0.99 or 0.01 (under 1 % with this
    rule), and after 2 epochs accuracy is 10-23 % instead of 92-95 % (5 seeds).

    Args:
        params: the parameters to optimize, or dicts defining param groups.
        lr: learning rate :math:`\eta`, a finite number > 0.
        alpha: momentum constant :math:`\alpha`, with :math:`0 \le \alpha < 1`.
    """

    def __init__(self, params, lr: float, alpha: float) -> None:
        _check_lr(lr)
        _check_alpha(alpha)
        super().__init__(params, {"lr": lr, "alpha": alpha})

    def _update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        lr, alpha = per_member(group["lr"], p), per_member(group["alpha"], p)
        state = self.state[p]
        if "dw" not in state:
            state["dw"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # dw(-1) = 0
        dw = state["dw"]
        # dw(m) = alpha dw(m-1) + (1 - alpha) dw_bp(m), with dw_bp(m) = -lr g(m)
        _add_scaled(dw.mul_(alpha), grad, (alpha - 1) * lr)
        p.add_(dw)  # w(m+1) = w(m) + dw(m)


class HeavyBall(_NotesOptimizer):
    r"""Conventional (heavy-ball) momentum, and Nesterov's variant; not the notes' rule.

    .. math::
        \begin{aligned}
        v(m) &= \alpha\, v(m-1) + g(m), \qquad v(-1) = 0 \\
        w(m+1) &= w(m) - \eta(m)\, v(m)
            && \text{(heavy ball)} \\
        w(m+1) &= w(m) - \eta(m)\, \bigl(g(m) + \alpha\, v(m)\bigr)
            && \text{(Nesterov, as PyTorch writes it)}
        \end{aligned}

    This is ``torch.optim.SGD(lr, momentum=alpha, nesterov=...)`` (no dampening): the velocity
    sums raw gradients, so the first step is :math:`\eta\, g(0)` and the steady step on a constant
    gradient is :math:`\eta\, g / (1-\alpha)`, :math:`1/(1-\alpha)` times that of
    :class:`Momentum` with the same ``lr``. The state key is ``"velocity"``, :math:`v(m-1)`; as
    it holds gradients, a changed lr rescales the whole remembered velocity.

    Args:
        params: the parameters to optimize, or dicts defining param groups.
        lr: learning rate :math:`\eta`, a finite number > 0.
        alpha: momentum constant :math:`\alpha`, with :math:`0 \le \alpha < 1`.
        nesterov: use Nesterov's variant.
    """

    def __init__(self, params, lr: float, alpha: float, nesterov: bool = False) -> None:
        _check_lr(lr)
        _check_alpha(alpha)
        super().__init__(params, {"lr": lr, "alpha": alpha, "nesterov": nesterov})

    def _update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        lr, alpha = per_member(group["lr"], p), per_member(group["alpha"], p)
        state = self.state[p]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # v(-1)
        v = state["velocity"]
        v.mul_(alpha).add_(grad)  # v(m) = alpha v(m-1) + g(m)
        if group["nesterov"]:
            _add_scaled(p, grad + alpha * v, -lr)  # w <- w - lr (g + alpha v)
        else:
            _add_scaled(p, v, -lr)  # w <- w - lr v


for _public in (GradientDescent, Momentum, HeavyBall):
    _public.__module__ = "mlp_torch.optim"  # their public name (mlp_torch/optim.py), as configs write it
