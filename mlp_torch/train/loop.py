"""The epoch loop's pieces, for K >= 1 members: the shuffle order, which examples each update
uses, the parameters as one flat tensor, the batch gradient (hand-written or autograd), the
penalties' sums and gradient, and the epoch's J.

Shapes: a member-free tensor for one member (K = 1: ``(n, n_in)``, parameters ``(P,)``), the same
with a leading member dimension for K > 1 (``(K, n, n_in)``, parameters ``(K, P)``). Data that all
members share keeps no member dimension (``(n, n_in)``) and broadcasts. The
:class:`~mlp_torch.train.module.MLPModule` runs the loop; this file holds what it is made of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mlp_torch.model.costs import COSTS, l1_grad, l1_penalty, l2_penalty
from mlp_torch.model.fused import fused_backprop
from mlp_torch.model.network import feedforward, per_member
from mlp_torch.model.optim import _add_scaled
from mlp_torch.train.distributed import sum_over_ranks

__all__ = [
    "FlatParameters",
    "add_penalty_gradient",
    "data_gradient",
    "epoch_objective",
    "epoch_orders",
    "epoch_permutation",
    "gather",
    "penalty_sums",
    "update_costs",
]


def epoch_permutation(n: int, seed: int, epoch: int, device=None) -> Tensor:
    """The shuffle order of epoch ``epoch``: a permutation of ``range(n)`` that depends on
    ``(seed, epoch)`` only, drawn on the CPU so that every device (and a resumed run) sees the
    same order."""
    if n < 0:
        raise ValueError(f"n={n} is out of range: n must be >= 0")
    generator = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + epoch) % 2**63)
    order = torch.randperm(n, generator=generator)  # (n,)
    return order if device is None else order.to(device)


def epoch_orders(n: int, seeds: Sequence[int], epoch: int) -> Tensor:
    """Each member's shuffle order of epoch ``epoch`` (its fit's :func:`epoch_permutation`):
    ``(n,)`` when all members share one seed, else ``(K, n)``."""
    orders = {seed: epoch_permutation(n, seed, epoch) for seed in dict.fromkeys(seeds)}
    if len(orders) == 1:
        return orders[seeds[0]]  # (n,)
    return torch.stack([orders[seed] for seed in seeds])  # (K, n)


def gather(t: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of ``t`` along its example dimension: ``t`` ``(n, d)`` or ``(K, n, d)``,
    ``index`` ``(m,)`` (the same rows for all) or ``(K, m)`` (each member's own); ``(m, d)``
    when neither has a member dimension, else ``(K, m, d)``."""
    if index.dim() == 1:
        return t[..., index, :]
    if t.dim() == 2:
        return t[index]  # (K, m, d)
    members = torch.arange(t.shape[0], device=t.device)[:, None]  # (K, 1)
    return t[members, index]  # (K, m, d)


def _views(flat: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Views of ``flat`` ``(..., P)``, one per member shape in ``shapes``, laid end to end along
    its last dimension: ``(..., *shape)`` each."""
    views, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(flat[..., offset : offset + size].view(*flat.shape[:-1], *shape))
        offset += size
    return views


class FlatParameters:
    """The members' parameters as views of one flat tensor ``flat`` ``(P,)`` (K = 1) or
    ``(K, P)``, laid out ``[W_1, ..., W_L, b_1, ..., b_L]`` per member, and their gradient
    ``grad`` laid out alike; the optimizer updates ``flat`` (every rule of
    :mod:`mlp_torch.model.optim` is elementwise, so that is the update of each parameter).

    Args:
        params: ``[W_1, ..., W_L, b_1, ..., b_L]``, each with the member dimension if K > 1.
        members: K.
        flat: the tensor to keep (the optimizer holds it) with new values, or ``None``.
    """

    def __init__(self, params: Sequence[Tensor], members: int, flat: Tensor | None = None) -> None:
        lead = () if members == 1 else (members,)
        shapes = [p.shape[len(lead) :] for p in params]  # each member's shape of each parameter
        data = torch.cat([p.detach().reshape(*lead, -1) for p in params], dim=-1)  # (P,) or (K, P)
        if flat is None:
            flat = data
        else:
            flat.data = data
        self.flat, self.shapes = flat, shapes
        for p, view in zip(params, _views(flat, shapes)):
            p.data = view
        self.grad = torch.zeros_like(flat)  # (P,) or (K, P)
        self.grads = _views(self.grad, shapes)  # [dJ/dW_1, ..., dJ/dW_L, dJ/db_1, ..., dJ/db_L]
        L = len(params) // 2
        self.weights, self.biases = list(params[:L]), list(params[L:])
        self.pointers = [p.data_ptr() for p in params]  # where each view starts
        self.n_weights = sum(math.prod(s) for s in shapes[:L])  # weights per member
        self.w = flat[..., : self.n_weights]  # (P_w,) or (K, P_w): all weights, ...
        self.g = self.grad[..., : self.n_weights]  # ... and their gradients

    def current(self, params: Sequence[Tensor]) -> bool:
        """Whether ``params`` are still the views made here (not moved or cast since)."""
        return [p.data_ptr() for p in params] == self.pointers


def data_gradient(
    weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, y: Tensor, grads: Sequence[Tensor],
    *, cost: str, scale: float, source: str, z_out: Tensor | None, chunk: int | None,
) -> None:  # fmt: skip
    """Write the gradient of the data term ``scale * sum_i C_i`` of the batch ``(x, y)`` into
    ``grads`` (``[dJ/dW_1, ..., dJ/db_L]``; the members' gradients are independent), fed in chunks
    of ``chunk`` examples if set (their gradients summed); each example's ``z_L`` into ``z_out``.
    ``source``: ``"manual"`` (:func:`mlp_torch.model.fused.fused_backprop`) or ``"autograd"``."""
    n = x.shape[-2]
    if chunk is None or chunk >= n:  # (also an empty shard: zero gradients)
        _one_gradient(weights, biases, x, y, grads, cost, scale, source, z_out)
        return
    part = [torch.empty_like(g) for g in grads]
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        z = None if z_out is None else z_out[..., rows, :]
        into = part if start else grads
        _one_gradient(weights, biases, x[..., rows, :], y[..., rows, :], into, cost, scale, source, z)
        if start:
            torch._foreach_add_(list(grads), part)  # sum the chunks' gradients


def _one_gradient(weights, biases, x, y, grads, cost, scale, source, z_out) -> None:
    L = len(weights)
    if source == "manual":
        fused_backprop(weights, biases, x, y, grads[:L], grads[L:], cost=cost, scale=scale, z_out=z_out)
        return
    with torch.enable_grad():  # members are independent: the sum's gradient is each one's
        zs, activations = feedforward(weights, biases, x)
        data = scale * COSTS[cost].fn(zs[-1], activations[-1], y).sum()
        torch._foreach_copy_(list(grads), torch.autograd.grad(data, [*weights, *biases]))
    if z_out is not None:
        z_out.copy_(zs[-1])


def add_penalty_gradient(w: Tensor, g: Tensor, l1: float | Tensor, l2: float | Tensor, source: str) -> None:
    """Add the penalties' gradient to ``g``, the gradient of all weights ``w`` (``(P_w,)`` or
    ``(K, P_w)``), once for all layers: ``l1 sign(w) + 2 l2 w``; ``l1``, ``l2`` numbers or ``(K,)``."""
    if not _on(l1) and not _on(l2):
        return
    if source == "manual":
        if _on(l1):
            g.add_(l1_grad(w, l1))
        if _on(l2):
            _add_scaled(g, w, 2 * per_member(l2, w))  # + l2_grad(w) = 2 l2 w, in one op
        return
    weights = [
        w.detach().view(*w.shape[:-1], 1, -1).requires_grad_()
    ]  # all weights as one (…, 1, P_w) matrix
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((l1_penalty(weights, l1) + l2_penalty(weights, l2)).sum(), weights)
    g.add_(grad.view(w.shape))


def _on(weight: float | Tensor) -> bool:
    return isinstance(weight, Tensor) or bool(weight)


def penalty_sums(w: Tensor, l1_out: Tensor | None, l2_out: Tensor | None) -> None:
    """Each member's ``sum |w|`` into ``l1_out`` and ``sum w^2`` into ``l2_out`` (those given), from
    all its weights ``w`` ``(P_w,)`` or ``(K, P_w)``: one operation each."""
    if w.dim() == 1:
        if l1_out is not None:
            torch.linalg.vector_norm(w, 1, out=l1_out)
        if l2_out is not None:
            torch.dot(w, w, out=l2_out)
        return
    if l1_out is not None:  # (abs, then sum: several times faster than vector_norm's ord 1)
        torch.sum(w.abs(), -1, out=l1_out)
    if l2_out is not None:  # (the 2-norm, squared: several times faster than vecdot)
        torch.linalg.vector_norm(w, dim=-1, out=l2_out).square_()


def update_costs(z: Tensor, y: Tensor, which: Tensor, updates: int, *, cost: str) -> Tensor:
    """Each update's cost sum ``sum_i C_i`` over its whole batch (``(U,)`` or ``(K, U)``), from each of
    this rank's examples' ``z_L`` ``z`` ``(..., n_local, n_out)`` at the weights it was used with, their
    targets ``y`` and the update each fed ``which`` ``(n_local,)``; summed over the ranks (one
    all-reduce)."""
    costs = COSTS[cost].fn(z, torch.sigmoid(z), y)  # (..., n_local): C_i at the weights i was used with
    per_update = costs.new_zeros(*costs.shape[:-1], updates).index_add_(-1, which, costs)  # (..., U)
    return sum_over_ranks(per_update)  # the whole batches' cost sums


def epoch_objective(
    per_update: Tensor,
    counts: Tensor,
    sums: Tensor,
    *,
    reduction: str,
    l1: float | Tensor,
    l2: float | Tensor,
) -> tuple[dict[str, Tensor], Tensor]:
    """The epoch's ``{"J", "cost", "l1", "l2"}`` of each member (``()`` or ``(K,)``) and each
    update's ``J`` (``(U,)`` or ``(K, U)``), from each update's cost sum ``per_update`` (``(..., U)``,
    :func:`update_costs`), the global batch sizes ``counts`` ``(U,)`` and the
    penalties' sums at each update's weights ``sums`` ``(2, ..., U)``; ``l1``, ``l2`` numbers or one
    per member ``(K,)``. The cost is reduced over the whole split as ``reduction`` says, the
    penalties averaged over the updates (the native loop's :func:`mlp_torch.train.native.figures`
    computes the same in its compiled code)."""
    total = per_update.sum(-1)  # (...)
    if reduction == "mean":
        total = total / counts.sum()
        per_update = per_update / counts
    p1, p2 = (s * (c[..., None] if getattr(c, "ndim", 0) else c) for s, c in zip(sums, (l1, l2)))  # (..., U)
    m1, m2 = p1.sum(-1) / p1.shape[-1], p2.sum(-1) / p2.shape[-1]  # (numpy's mean costs several sums)
    return {"cost": total, "l1": m1, "l2": m2, "J": total + m1 + m2}, per_update + p1 + p2
