"""Backpropagation formulated for speed: the equations of :func:`mlp_torch.backprop.backprop`
with fewer, fused tensor operations, writing into buffers the caller owns.

:mod:`mlp_torch.backprop` is THE readable implementation of the notes' equations and the reference
every test checks against; this file is the same mathematics arranged so that a training update
costs as few tensor operations as possible (at batch 1 each operation's fixed cost dominates):

========================================  ===============================================
readable (``backprop.backprop``)          fused (:func:`fused_backprop`)
========================================  ===============================================
``z = a @ W.T + b``                       ``torch.addmm(b, a, W.T)``: one op
``delta_L = grad_a C * f'(z_L)``          the cost's own ``delta``, then times ``s`` once
``(delta W) * f'(z)``, ``f' = a (1-a)``   ``sigmoid_backward(delta W, a)``: one fused op
``s * (delta.T @ a)``, ``s * sum delta``  ``delta.T @ a``, ``delta.T @ 1``, delta scaled
penalties' gradients per layer            left to the caller (one op on all weights at once)
new tensors for every gradient            written into the caller's ``grad_W``, ``grad_b``
========================================  ===============================================

Scaling ``delta_L`` by ``s`` rather than each gradient is exact in real arithmetic (every later
delta and gradient is linear in ``delta_L``) and differs by rounding only; ``tests/test_fused.py``
checks that both give the same gradients in float64 to a relative 1e-12.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mlp_torch.costs import COSTS

__all__ = ["fused_backprop"]


def fused_backprop(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    grad_W: Sequence[Tensor],
    grad_b: Sequence[Tensor],
    *,
    cost: str = "quadratic",
    scale: float = 1.0,
    z_out: Tensor | None = None,
) -> Tensor:
    """Write ``dJ/dW_l`` and ``dJ/db_l`` of the data term ``J = s sum_i C_i`` into ``grad_W[l]``
    ``(n_l, n_{l-1})`` and ``grad_b[l]`` ``(n_l,)`` (penalties not included: the caller adds
    their gradients). Returns ``z_L`` ``(n, n_L)``, written into ``z_out`` if given, from which the
    caller can compute the batch's cost later. Call it under ``torch.no_grad()`` (as training
    loops run anyway) or with tensors that do not require grad.

    Args:
        weights, biases: ``[W_1, ..., W_L]`` ``(out, in)`` and ``[b_1, ..., b_L]``.
        x, y: a batch, ``(n, n_0)`` and ``(n, n_L)``.
        grad_W, grad_b: contiguous tensors shaped like ``weights`` and ``biases`` (overwritten).
        cost: a name in :data:`mlp_torch.costs.COSTS`; scale: ``s``, each example's weight.
        z_out: optional ``(n, n_L)`` buffer for the output layer's ``z_L``.
    """
    activations = [x]  # a_0 = x, a_1, ..., a_L, each (n, n_l)
    last = len(weights) - 1
    for W, b in zip(weights[:last], biases[:last]):
        activations.append(torch.sigmoid(torch.addmm(b, activations[-1], W.T)))  # (n, n_l)
    z = torch.addmm(biases[last], activations[-1], weights[last].T, out=z_out)  # (n, n_L): z_L
    activations.append(torch.sigmoid(z))  # (n, n_L)
    delta = COSTS[cost].delta(z, activations[-1], y)  # (n, n_L)
    if scale != 1.0:
        delta = delta * scale  # s delta_L: every later delta and gradient carries s
    ones = x.new_ones(x.shape[0])  # (n,): sum over examples as a matrix-vector product, far faster
    for i in range(last, -1, -1):
        torch.mm(delta.T, activations[i], out=grad_W[i])  # (n_l, n) @ (n, n_{l-1})
        torch.mv(delta.T, ones, out=grad_b[i])  # (n_l,) = sum_i delta_i
        if i:
            delta = torch.ops.aten.sigmoid_backward(delta @ weights[i], activations[i])  # (n, n_{l-1})
    return z
