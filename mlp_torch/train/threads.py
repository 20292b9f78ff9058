"""How many threads a run's tensor operations use, chosen by the work of one update.

A matrix product of a few hundred thousand multiply-adds takes tens of microseconds on one core;
splitting it over more threads costs about as much as it saves, and when another process is busy
on the machine each thread must wait for a free core, so an update can take many times longer
(the default digits run took 20 times its idle time with two threads beside one busy process). So:
one thread when the largest matrix product of an update is small, all the cores this process may
use above that. ``mlp-torch fit`` (:class:`mlp_torch.module.MLPModule`), ``mlp-torch sweep``
(whose K members make the product K times larger), the test suite and ``scripts/cv.py`` follow
this rule; ``--model.num_threads`` overrides it.

The line, :data:`SMALL_PRODUCT`, is drawn for a shared machine rather than an idle one: on an idle
2-core machine two threads are already faster from a few million multiply-adds (fused backprop of
the 64-100-10 network on all 1,078 training examples: 873 us with one, 562 us with two; a
32-member sweep at batch 16: about 1.5 times faster), but beside one busy process the same
full-batch update took about 50 times longer with two threads (62 ms instead of 1.1 ms), as each
product waits for a core the other process holds.

That is the threads of one update's products. A sweep's members in the native loop
(:mod:`mlp_torch.train.native`) are shared among the cores in another way: each thread trains
whole epochs of its own members and the threads meet once per epoch, not at every product; there
every core this process may use works (:func:`available_cores`, at most one per member). A
32-member sweep of the default run on 2 cores, `wall time`: idle 4.1-4.2 s on two threads
against 6.2 s on one; beside one busy process 6.8-7.3 s against 6.1-6.5 s (``--model.num_threads
1`` keeps one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["SMALL_PRODUCT", "available_cores", "choose_num_threads", "largest_product", "use_threads"]

SMALL_PRODUCT = 1 << 26  # multiply-adds (67M, ~5 ms on one core): below, one thread


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), capped by ``OMP_NUM_THREADS`` if set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(cap))) if cap.isdigit() and int(cap) > 0 else cores


def largest_product(sizes: Sequence[int], rows: int, members: int = 1) -> int:
    """Multiply-adds of an update's largest matrix product: ``members x rows x n_in x n_out`` of its
    widest layer (``members`` stacked networks, as a sweep trains them)."""
    return members * rows * max(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def choose_num_threads(sizes: Sequence[int], rows: int, cores: int | None = None, members: int = 1) -> int:
    """1 if the largest product of an update on ``rows`` examples (of ``members`` stacked networks)
    is below :data:`SMALL_PRODUCT`, else ``cores`` (default: :func:`available_cores`)."""
    if largest_product(sizes, rows, members) < SMALL_PRODUCT:
        return 1
    return cores or available_cores()


def use_threads(threads: int, product: int, by_option: bool, whose: str = "") -> str:
    """Set ``threads`` intra-op threads (if not set already) and return the line that logs the
    choice: ``threads: N (why)``, ``product`` being the update's largest matrix product (of
    ``whose`` work, e.g. " for all members"), ``by_option`` whether ``--model.num_threads`` chose."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if by_option:
        return f"threads: {threads} (--model.num_threads)"
    rule = f"{'<' if threads == 1 else '>='} {SMALL_PRODUCT:,}; --model.num_threads to choose"
    return f"threads: {threads} (largest matrix product per update {product:,} multiply-adds{whose}, {rule})"
