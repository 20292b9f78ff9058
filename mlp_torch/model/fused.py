"""Backpropagation formulated for speed: the equations of :func:`mlp_torch.backprop.backprop`
with fewer, fused tensor operations, writing into buffers the caller owns.

:mod:`mlp_torch.model.backprop` is THE readable implementation of the notes' equations and the reference
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

Stacked members (see :mod:`mlp_torch.model.network`; a sweep trains them) take the same lines:
weights ``(K, out, in)``, biases ``(K, out)``, gradients written into ``(K, ...)`` buffers;
``torch.baddbmm`` for ``addmm`` and batched products for ``mm``, and when all members see one
input the first layer of all of them is one ``addmm``.

Scaling ``delta_L`` by ``s`` rather than each gradient is exact in real arithmetic (every later
delta and gradient is linear in ``delta_L``) and differs by rounding only; ``tests/test_fused.py``
checks that both give the same gradients in float64 to a relative 1e-12.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from mlp_torch.model.costs import COSTS

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
    activations = [x]  # a_0 = x, a_1, ..., a_L, each (n, n_l) (or (K, n, n_l))
    last = len(weights) - 1
    for W, b in zip(weights[:last], biases[:last]):
        activations.append(torch.sigmoid(_weighted_input(W, activations[-1], b, None)))  # (n, n_l)
    z = _weighted_input(weights[last], activations[-1], biases[last], z_out)  # (n, n_L): z_L
    activations.append(torch.sigmoid(z))  # (n, n_L)
    delta = COSTS[cost].delta(z, activations[-1], y)  # (n, n_L)
    if scale != 1.0:
        delta = delta * scale  # s delta_L: every later delta and gradient carries s
    ones = _ones(x.shape[-2], x.dtype, x.device) if delta.dim() == 2 else None  # (n,)
    for i in range(last, -1, -1):
        torch.matmul(delta.mT, activations[i], out=grad_W[i])  # (n_l, n) @ (n, n_{l-1})
        if ones is not None:  # (n_l,) = sum_i delta_i as a mat-vec: far faster than a sum, in 2-D
            torch.matmul(delta.mT, ones, out=grad_b[i])
        else:  # members' (K, n_l), into a view of their flat gradient
            torch.sum(delta, dim=-2, out=grad_b[i])
        if i:
            delta = _sigmoid_backward(delta @ weights[i], activations[i])  # (n, n_{l-1})
    return z


_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # g * a * (1 - a), one op; the overload
# itself, bound once: through ``torch.ops.aten.sigmoid_backward`` each call also resolves it


@functools.lru_cache(maxsize=16)
def _ones(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(n,)`` ones, made once per size, dtype and device (every update of a batch size uses the
    same); never written to. Made outside inference mode, so autograd may use them too."""
    with torch.inference_mode(False):
        return torch.ones(n, dtype=dtype, device=device)


def _weighted_input(W: Tensor, a: Tensor, b: Tensor, out: Tensor | None) -> Tensor:
    """``z = b + a W^T`` in one op, ``(n, out)`` or ``(K, n, out)``, written into ``out`` if given."""
    if W.dim() == 2:
        return torch.addmm(b, a, W.T, out=out)
    if a.dim() == 3:  # (into a new tensor: baddbmm into a strided slice loops over the members)
        z = torch.baddbmm(b.unsqueeze(-2), a, W.mT)  # (K, n, out)
        return z if out is None else out.copy_(z)
    K, n_out, n_in = W.shape  # members share the input a (n, in): one product for all of them
    z = torch.addmm(b.reshape(K * n_out), a, W.reshape(K * n_out, n_in).T)  # (n, K * out)
    z = z.view(a.shape[0], K, n_out).transpose(0, 1)  # (K, n, out)
    return z if out is None else out.copy_(z)
