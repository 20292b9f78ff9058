"""Data-parallel training: which examples of each update a process computes, and the sum over
processes of what they computed.

With ``W`` processes (ranks; Lightning's ``--trainer.strategy ddp``), every rank holds the whole
training split and the same weights, and walks the epoch's updates in the same order (the shuffle
of :func:`mlp_torch.train.loop.epoch_permutation` depends on ``(seed, epoch)`` only). Update ``k`` uses
the ``n_k`` examples at positions ``[k b, k b + n_k)`` of that order (``b``: the global
``batch_size``); rank ``r`` computes the cost gradient of its shard of them,

    rows ``[floor(n_k r / W), floor(n_k (r + 1) / W))`` of the batch,

so the shards tile the batch exactly (no example repeated or dropped, sizes differing by at most
one), and :func:`sum_over_ranks` adds the ranks' gradients. Each example's cost is weighted by the
GLOBAL batch's scale (``1/n_k`` or 1), so the sum is the one-process gradient of the same batch up
to float rounding, whatever ``W`` is.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["max_over_ranks", "shard", "sum_over_ranks", "update_shards"]


def shard(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s rows of a batch of ``n``: ``[floor(n r / W), floor(n (r + 1) / W))``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} is out of range for world size {world}")
    return slice(n * rank // world, n * (rank + 1) // world)


def update_shards(n: int, size: int, rank: int, world: int) -> list[slice]:
    """For each update of an epoch of ``n`` examples in batches of ``size`` (the last one may be
    smaller), the positions in the epoch's order that rank ``rank`` computes."""
    shards = []
    for start in range(0, n, size):
        rows = shard(min(size, n - start), rank, world)
        shards.append(slice(start + rows.start, start + rows.stop))
    return shards


def sum_over_ranks(t: Tensor) -> Tensor:
    """``t`` summed over all ranks, in place, by one ``all_reduce`` on the default process group
    (the one Lightning's DDP strategy set up); ``t`` itself when there is one process.

    Lightning's ``strategy.reduce`` would put a ``barrier`` before every ``all_reduce``: a second
    collective per update and, with NCCL, a wait of the host for the device. The training loop
    calls this once per update and nothing else, so the host never waits for the device."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def max_over_ranks(t: Tensor) -> Tensor:
    """``t``'s elementwise maximum over all ranks, in place (``t`` with one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t
