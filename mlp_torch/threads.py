"""How many threads a run's tensor operations use, chosen by the work of one update.

A matrix product of a few hundred thousand multiply-adds takes tens of microseconds on one core;
splitting it over more threads costs about as much as it saves, and when another process is busy
on the machine each thread must wait for a free core, so an update can take many times longer
(the default digits run took 20 times its idle time with two threads beside one busy process). So:
one thread when the largest matrix product of an update is small, all the cores this process may
use for wide networks. ``mlp-torch fit`` (:class:`mlp_torch.module.MLPModule`), the test suite and
``scripts/cv.py`` follow this rule; ``--model.num_threads`` overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["SMALL_PRODUCT", "available_cores", "choose_num_threads", "largest_product"]

SMALL_PRODUCT = 1 << 26  # multiply-adds (67M, ~5 ms on one core): below, one thread


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), capped by ``OMP_NUM_THREADS`` if set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(cap))) if cap.isdigit() and int(cap) > 0 else cores


def largest_product(sizes: Sequence[int], rows: int) -> int:
    """Multiply-adds of an update's largest matrix product: ``rows x n_in x n_out`` of its widest layer."""
    return rows * max(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def choose_num_threads(sizes: Sequence[int], rows: int, cores: int | None = None) -> int:
    """1 if the largest product of an update on ``rows`` examples is below :data:`SMALL_PRODUCT`,
    else ``cores`` (default: :func:`available_cores`)."""
    if largest_product(sizes, rows) < SMALL_PRODUCT:
        return 1
    return cores or available_cores()
