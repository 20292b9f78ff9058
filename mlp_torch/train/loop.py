"""The epoch loop's shuffle order."""

import torch
from torch import Tensor

__all__ = ["epoch_permutation"]


def epoch_permutation(n: int, seed: int, epoch: int, device=None) -> Tensor:
    """The shuffle order of epoch ``epoch``: a permutation of ``range(n)`` that depends on
    ``(seed, epoch)`` only, drawn on the CPU so that every device (and a resumed run) sees the
    same order."""
    if n < 0:
        raise ValueError(f"n={n} is out of range: n must be >= 0")
    generator = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + epoch) % 2**63)
    order = torch.randperm(n, generator=generator)  # (n,)
    return order if device is None else order.to(device)
