"""The objective and its gradients: hand-written backpropagation next to autograd's.

The objective, one convention everywhere (``reduction="mean"``, the default)::

    J = (1/n) sum_i C(y_hat_i, y_i) + l1 * sum |w| + l2 * sum w^2

over a batch of ``n`` examples; ``reduction="sum"`` gives the notes' literal accumulation
``J = sum_i C_i + penalties``. Penalties are on weights only and are never scaled by ``n``.

Backpropagation (notes, eqs. 5-19), rows as examples, weights ``(out, in)``::

    delta_L = grad_a C * f'(z_L)                        # output error
    delta_l = (delta_{l+1} W_{l+1}) * f'(z_l)           # = (W_{l+1}^T delta_{l+1}) * f'(z_l) per example
    dJ/dW_l = s * delta_l^T a_{l-1} + penalty'(W_l)      # dJ/dW_jk = a_k^{l-1} delta_j^l, summed
    dJ/db_l = s * sum_i delta_l,i                       # dJ/db = delta, summed

with ``s = 1/n`` for ``"mean"`` and ``1`` for ``"sum"``. No autograd is used: it runs under
``torch.no_grad()`` on tensors that do not require grad.

The same lines train ``K`` stacked members at once (weights ``(K, out, in)``, see
:mod:`mlp_torch.model.network`): the objective's terms are then ``(K,)``, one per member, and ``l1``,
``l2`` may be ``(K,)`` tensors. Members never mix: each one's gradient is that of its own ``J``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mlp_torch.model.costs import COSTS, is_off, l1_grad, l1_penalty, l2_grad, l2_penalty
from mlp_torch.model.network import SigmoidMLP, feedforward, sigmoid_prime

__all__ = [
    "Backprop",
    "autograd_gradients",
    "backprop",
    "check_batch",
    "check_objective_args",
    "deltas",
    "manual_gradients",
    "objective",
    "objective_terms",
    "output_terms",
    "reduction_scale",
]

REDUCTIONS = ("mean", "sum")


def reduction_scale(reduction: str, n: int) -> float:
    """``s``, the weight of each example's cost: ``1/n`` for ``"mean"``, ``1`` for ``"sum"``."""
    return 1.0 / n if reduction == "mean" else 1.0


def check_objective_args(cost: str, l1: float, l2: float, reduction: str) -> None:
    """Raise ``ValueError`` naming any bad objective setting."""
    if cost not in COSTS:
        raise ValueError(f"cost={cost!r} is not a known cost: use one of {sorted(COSTS)}")
    for name, value in (("l1", l1), ("l2", l2)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            raise ValueError(f"{name}={value!r} must be a finite number >= 0 (0 turns it off)")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not known: use 'mean' or 'sum'")


def check_batch(sizes: Sequence[int], dtype: torch.dtype, device: torch.device, x: Tensor, y: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(n, n_in)`` and ``y`` is ``(n, n_out)``, ``n >= 1``,
    both floating tensors of the network's dtype on its device."""
    n_in, n_out = sizes[0], sizes[-1]
    for name, t, width in (("x", x, n_in), ("y", y, n_out)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (n, {width}), got {type(t).__name__}")
        if t.dim() != 2 or t.shape[1] != width or t.shape[0] < 1:
            raise ValueError(
                f"{name} must have shape (n, {width}) with n >= 1 for a network of sizes {list(sizes)}, "
                f"got {tuple(t.shape)}"
            )
        if t.dtype != dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but the network is {dtype}: convert one of them")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the network is on {device}: move one of them")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}: they must match")


def _check(net: SigmoidMLP, x: Tensor, y: Tensor, cost: str, l1: float, l2: float, reduction: str) -> None:
    check_objective_args(cost, l1, l2, reduction)
    W = net.weights[0]
    check_batch(net.sizes, W.dtype, W.device, x, y)


def objective_terms(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    scale: float = 1.0,
) -> dict[str, Tensor]:
    """``{"J", "cost", "l1", "l2"}``: the objective and its three terms (scalar tensors, or
    ``(K,)`` for stacked members), each example's cost weighted by ``scale`` (see
    :func:`reduction_scale`)."""
    zs, activations = feedforward(weights, biases, x)
    return output_terms(weights, zs[-1], activations[-1], y, cost=cost, l1=l1, l2=l2, scale=scale)


def output_terms(
    weights: Sequence[Tensor],
    z: Tensor,
    a: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float | Tensor = 0.0,
    l2: float | Tensor = 0.0,
    scale: float = 1.0,
) -> dict[str, Tensor]:
    """:func:`objective_terms` from a forward pass already made: the output layer's ``z_L`` and
    ``a_L`` ``(n, n_out)`` (or ``(K, n, n_out)``)."""
    data = scale * COSTS[cost].fn(z, a, y).sum(dim=-1)  # () or (K,)
    p1, p2 = l1_penalty(weights, l1), l2_penalty(weights, l2)
    return {"J": data + p1 + p2, "cost": data, "l1": p1, "l2": p2}


def deltas(
    weights: Sequence[Tensor], zs: Sequence[Tensor], activations: Sequence[Tensor], y: Tensor, cost: str
) -> list[Tensor]:
    """``[delta_1, ..., delta_L]``, each ``(n, n_l)`` (or ``(K, n, n_l)``): the output error, then
    the errors propagated back, ``delta_l = (delta_{l+1} W_{l+1}) * f'(z_l)`` (notes, eqs. 5-19)."""
    delta = COSTS[cost].delta(zs[-1], activations[-1], y)  # (n, n_L)
    ds = [delta]
    for W, a in zip(reversed(weights[1:]), reversed(activations[1:-1])):
        delta = (delta @ W) * sigmoid_prime(a)  # (n, n_{l+1}) @ (n_{l+1}, n_l) -> (n, n_l)
        ds.append(delta)
    return ds[::-1]


@dataclass
class Backprop:
    """One forward and backward pass: the objective's terms and its gradients per layer."""

    J: Tensor
    cost: Tensor
    l1: Tensor
    l2: Tensor
    grad_W: list[Tensor]
    grad_b: list[Tensor]


@torch.no_grad()
def backprop(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float | Tensor = 0.0,
    l2: float | Tensor = 0.0,
    scale: float = 1.0,
) -> Backprop:
    """Hand-written backpropagation on plain tensors, each example's cost weighted by ``scale``
    (no checks; see :func:`manual_gradients`). Stacked members: weights ``(K, out, in)``, ``x``
    ``(n, n_in)`` shared or ``(K, n, n_in)``, ``y`` likewise; ``l1``, ``l2`` numbers or ``(K,)``."""
    zs, activations = feedforward(weights, biases, x)
    ds = deltas(weights, zs, activations, y, cost)
    grad_W = [scale * (d.mT @ a) for d, a in zip(ds, activations[:-1])]  # (n_l, n) @ (n, n_{l-1})
    grad_b = [scale * d.sum(dim=-2) for d in ds]  # (n_l,)
    if not is_off(l1):
        grad_W = [g + l1_grad(W, l1) for g, W in zip(grad_W, weights)]
    if not is_off(l2):
        grad_W = [g + l2_grad(W, l2) for g, W in zip(grad_W, weights)]
    terms = output_terms(weights, zs[-1], activations[-1], y, cost=cost, l1=l1, l2=l2, scale=scale)
    return Backprop(terms["J"], terms["cost"], terms["l1"], terms["l2"], grad_W, grad_b)


def _by_name(net: SigmoidMLP, grad_W: Sequence[Tensor], grad_b: Sequence[Tensor]) -> dict[str, Tensor]:
    grads = {}
    for i, (gW, gb) in enumerate(zip(grad_W, grad_b)):
        grads[f"layers.{i}.weight"], grads[f"layers.{i}.bias"] = gW, gb
    return grads


def objective(
    net: SigmoidMLP,
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """The scalar objective ``J`` of ``net`` on the batch ``(x, y)`` (convention: module docstring).

    Differentiable with respect to ``net``'s parameters.

    Args:
        x: inputs ``(n, n_in)``; y: float targets ``(n, n_out)`` (one-hot for classes).
        cost: ``"quadratic"`` or ``"cross_entropy"``; l1, l2: penalty weights >= 0;
        reduction: ``"mean"`` (default) or ``"sum"``.
    """
    _check(net, x, y, cost, l1, l2, reduction)
    scale = reduction_scale(reduction, x.shape[0])
    terms = objective_terms(net.weights, net.biases, x, y, cost=cost, l1=l1, l2=l2, scale=scale)
    return terms["J"]


def manual_gradients(
    net: SigmoidMLP,
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    """``dJ/dp`` for every parameter by hand-written backprop, keyed by ``net.named_parameters()``."""
    _check(net, x, y, cost, l1, l2, reduction)
    weights = [W.detach() for W in net.weights]
    biases = [b.detach() for b in net.biases]
    bp = backprop(
        weights, biases, x, y, cost=cost, l1=l1, l2=l2, scale=reduction_scale(reduction, x.shape[0])
    )
    return _by_name(net, bp.grad_W, bp.grad_b)


def autograd_gradients(
    net: SigmoidMLP,
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    """``dJ/dp`` by ``torch.autograd`` on leaf copies of the parameters (``net`` is untouched,
    its ``.grad`` fields included), keyed like :func:`manual_gradients`."""
    _check(net, x, y, cost, l1, l2, reduction)
    weights = [W.detach().requires_grad_() for W in net.weights]
    biases = [b.detach().requires_grad_() for b in net.biases]
    with torch.enable_grad():
        scale = reduction_scale(reduction, x.shape[0])
        J = objective_terms(weights, biases, x, y, cost=cost, l1=l1, l2=l2, scale=scale)["J"]
        grads = torch.autograd.grad(J, [*weights, *biases])
    L = len(weights)
    return _by_name(net, grads[:L], grads[L:])
