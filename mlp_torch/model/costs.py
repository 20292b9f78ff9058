"""Costs and penalties, each next to its derivative, looked up by name.

A cost is per example and summed over the outputs ``k``; the objective (see
:func:`mlp_torch.backprop.objective`) averages or sums it over the batch. Each cost also gives the
output-layer error ``delta_L = dC/dz_L`` (the start of the notes' backprop, eqs. 5-19).

Penalties act on weights only, never on biases, and are added once per objective, unscaled by
the batch size: ``l1 * sum |w|`` (sparsity) and ``l2 * sum w^2`` (weight decay, the notes' eq. 21
with gamma = l2).

Stacked members (see :mod:`mlp_torch.model.network`): costs are then ``(K, n)``, penalties ``(K,)``,
and a penalty weight is a number or a ``(K,)`` tensor, one per member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from mlp_torch.model.network import per_member, sigmoid_prime

__all__ = [
    "COSTS",
    "CrossEntropyCost",
    "QuadraticCost",
    "is_off",
    "l1_grad",
    "l1_penalty",
    "l2_grad",
    "l2_penalty",
]


class QuadraticCost:
    """``C = 1/2 sum_k (y_hat_k - y_k)^2`` (the notes' cost)."""

    @staticmethod
    def fn(z: Tensor, a: Tensor, y: Tensor) -> Tensor:
        """Per-example cost ``(n,)`` from the output layer's ``z_L``, ``a_L`` and targets, ``(n, k)``
        (``(K, n)`` from ``(K, n, k)`` for stacked members)."""
        return 0.5 * ((a - y) ** 2).sum(dim=-1)  # (n,)

    @staticmethod
    def delta(z: Tensor, a: Tensor, y: Tensor) -> Tensor:
        """``delta_L = grad_a C * f'(z_L) = (a_L - y) * f'(z_L)``, ``(n, k)``."""
        return (a - y) * sigmoid_prime(a)  # (n, k)


class CrossEntropyCost:
    """``C = -sum_k [y_k ln y_hat_k + (1 - y_k) ln(1 - y_hat_k)]`` for sigmoid outputs.

    Computed from ``z_L`` as ``softplus(z) - y z``, which equals the formula above (since
    ``ln f(z) = -softplus(-z)`` and ``ln(1 - f(z)) = -softplus(z)``) and stays finite when the
    sigmoid saturates.
    """

    @staticmethod
    def fn(z: Tensor, a: Tensor, y: Tensor) -> Tensor:
        """Per-example cost ``(n,)``."""
        return (F.softplus(z) - y * z).sum(dim=-1)  # (n,)

    @staticmethod
    def delta(z: Tensor, a: Tensor, y: Tensor) -> Tensor:
        """``delta_L = a_L - y``: the sigmoid's derivative cancels, so no learning slowdown."""
        return a - y  # (n, k)


COSTS: dict[str, type[QuadraticCost] | type[CrossEntropyCost]] = {
    "quadratic": QuadraticCost,
    "cross_entropy": CrossEntropyCost,
}


def is_off(weight: float | Tensor) -> bool:
    """A penalty weight given as the number 0 (a tensor of weights counts as on)."""
    return not isinstance(weight, Tensor) and not weight


def l1_penalty(weights: Sequence[Tensor], l1: float | Tensor) -> Tensor:
    """``l1 * sum_l sum |W_l|``: a scalar tensor, ``(K,)`` for stacked members (no work when
    ``l1`` is 0)."""
    if is_off(l1):
        return weights[0].new_zeros(weights[0].shape[:-2])
    return l1 * sum(W.abs().sum(dim=(-2, -1)) for W in weights)


def l1_grad(W: Tensor, l1: float | Tensor) -> Tensor:
    """``d/dW l1 sum|W| = l1 * sign(W)`` (the subgradient 0 at W = 0)."""
    return per_member(l1, W) * torch.sign(W)


def l2_penalty(weights: Sequence[Tensor], l2: float | Tensor) -> Tensor:
    """``l2 * sum_l sum W_l^2`` (notes, eq. 21 with gamma = l2): a scalar tensor, ``(K,)`` for
    stacked members (no work when ``l2`` is 0)."""
    if is_off(l2):
        return weights[0].new_zeros(weights[0].shape[:-2])
    return l2 * sum((W * W).sum(dim=(-2, -1)) for W in weights)


def l2_grad(W: Tensor, l2: float | Tensor) -> Tensor:
    """``d/dW l2 sum W^2 = 2 * l2 * W``."""
    return 2 * per_member(l2, W) * W
