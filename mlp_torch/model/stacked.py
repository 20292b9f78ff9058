"""K networks in lockstep: sigmoid MLPs of the same layer sizes stacked along a leading member
dimension, trained by the same hand-written backprop and optimizers as one network.

Member ``k`` of a :class:`StackedMLP` built from networks ``nets`` starts with exactly
``nets[k]``'s weights (its own ``init``, ``bias_init`` and ``seed``). Its parameters are
``W.{l}`` ``(K, out, in)`` and ``b.{l}`` ``(K, out)`` for each computing layer ``l``; every
function of :mod:`mlp_torch.model.network`, :mod:`mlp_torch.model.costs`, :mod:`mlp_torch.model.backprop` and
:mod:`mlp_torch.optim` takes them as they are.

This module knows nothing of training or Lightning: it is a plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mlp_torch.model.network import SigmoidMLP, feedforward

__all__ = ["StackedMLP"]


class StackedMLP(nn.Module):
    """``K`` sigmoid MLPs of the same sizes as one module, one member per network.

    Args:
        nets: the members' starting networks, all of the same ``sizes``, dtype and device.
    """

    def __init__(self, nets: Sequence[SigmoidMLP]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("StackedMLP needs at least one network")
        sizes = nets[0].sizes
        for k, net in enumerate(nets):
            if net.sizes != sizes:
                raise ValueError(f"member {k} has layer sizes {net.sizes}, member 0 {sizes}: they must match")
        self.sizes, self.n_members = list(sizes), len(nets)
        self.W = nn.ParameterList(
            nn.Parameter(torch.stack([net.weights[i].detach() for net in nets]))  # (K, out, in)
            for i in range(len(sizes) - 1)
        )
        self.b = nn.ParameterList(
            nn.Parameter(torch.stack([net.biases[i].detach() for net in nets]))  # (K, out)
            for i in range(len(sizes) - 1)
        )

    @property
    def weights(self) -> list[Tensor]:
        """``[W_1, ..., W_L]``, each ``(K, out, in)``."""
        return list(self.W)

    @property
    def biases(self) -> list[Tensor]:
        """``[b_1, ..., b_L]``, each ``(K, out)``."""
        return list(self.b)

    def forward_pass(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(zs, activations)`` of every layer, each ``(K, n, n_l)``; ``x`` is ``(n, n_in)``
        (all members see it) or ``(K, n, n_in)``."""
        return feedforward(self.weights, self.biases, x)

    def forward(self, x: Tensor) -> Tensor:
        """``y_hat = a_L`` of every member, ``(K, n, n_out)``."""
        return self.forward_pass(x)[1][-1]

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s weights as a :class:`SigmoidMLP` state dict (``layers.{l}.weight``, ...)."""
        state = {}
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = (
                W[k].detach().clone(),
                b[k].detach().clone(),
            )
        return state

    def extra_repr(self) -> str:
        return f"members={self.n_members}, sizes={self.sizes}"
