"""The network of the notes: a multilayer perceptron with a sigmoid on every layer.

Layer-index convention (as in the notes): layer 0 is the input, ``a_0 = x``; layer ``l = 1..L``
computes ``z_l = W_l a_{l-1} + b_l`` and ``a_l = f(z_l)``; ``y_hat = a_L``. In code the per-layer
lists are 0-based over the *computing* layers: ``weights[0]`` is ``W_1``. Weights use
``nn.Linear``'s ``(out, in)`` layout, and examples are rows, so a batch ``x`` is ``(n, n_in)`` and
``z_l = a_{l-1} @ W_l.T + b_l`` is ``(n, n_l)``.

Members: every function here (and in :mod:`mlp_torch.model.costs`, :mod:`mlp_torch.model.backprop`,
:mod:`mlp_torch.optim`) also takes ``K`` networks stacked along a leading member dimension, as a
sweep trains them: weights ``(K, out, in)``, biases ``(K, out)``, activations ``(K, n, n_l)``, and
per-member settings as ``(K,)`` tensors (see :func:`per_member`). The equations are the same
lines of code; ``W.mT`` and batched matrix products do the rest. The input ``x`` is either one
batch ``(n, n_in)`` that all members see, or one batch per member ``(K, n, n_in)``.

:class:`StackedMLP` holds K networks of one layer sizes as one module, member ``k`` starting with
exactly the weights of the ``k``-th :class:`SigmoidMLP` it is built from (a sweep trains them).

This module knows nothing of training or Lightning: its networks are plain ``nn.Module``s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mlp_torch.limits import check_fits_in_memory

__all__ = [
    "INITS",
    "SigmoidMLP",
    "StackedMLP",
    "feedforward",
    "per_member",
    "sigmoid",
    "sigmoid_prime",
    "weighted_input",
]


def sigmoid(z: Tensor) -> Tensor:
    """The activation ``f(z) = 1 / (1 + exp(-z))`` (the notes' f)."""
    return torch.sigmoid(z)


def sigmoid_prime(a: Tensor) -> Tensor:
    """``f'(z) = f(z) (1 - f(z))``, written from the layer's output ``a = f(z)``."""
    return a * (1 - a)


def per_member(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A setting for ``like``: a number as it is, or a ``(K,)`` tensor (one value per member)
    viewed as ``(K, 1, ..., 1)`` so that it broadcasts over the member dimension of ``like``."""
    if isinstance(value, Tensor):
        return value.view(-1, *([1] * (like.dim() - 1)))
    return value


def weighted_input(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``z = W a + b`` with rows as examples: ``a @ W.T + b``, ``(n, out)`` or ``(K, n, out)``.

    When stacked members ``W`` ``(K, out, in)`` share one input ``a`` ``(n, in)``, the K products
    are done as one: ``a @ [W_1; ...; W_K].T``, ``(n, K * out)``.
    """
    if W.dim() == 3 and a.dim() == 2:
        K, n_out, n_in = W.shape
        z = (a @ W.reshape(K * n_out, n_in).T).view(a.shape[0], K, n_out)  # (n, K, out)
        return z.transpose(0, 1) + b[:, None, :]  # (K, n, out)
    return a @ W.mT + b[..., None, :]  # (..., n, in) @ (..., in, out) -> (..., n, out)


def feedforward(
    weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """The forward pass of the notes: ``z_l = W_l a_{l-1} + b_l``, ``a_l = f(z_l)``.

    Returns ``zs = [z_1, ..., z_L]`` and ``activations = [a_0 = x, a_1, ..., a_L]``; with rows as
    examples, each ``z_l`` and ``a_l`` is ``(n, n_l)``, or ``(K, n, n_l)`` for stacked members.
    """
    zs, activations = [], [x]
    for W, b in zip(weights, biases):
        z = weighted_input(W, activations[-1], b)  # (n, n_l) or (K, n, n_l)
        zs.append(z)
        activations.append(sigmoid(z))  # like z
    return zs, activations


# Weight initialization schemes, by name: each fills a (out, in) tensor from a float64 generator.
# Drawing in float64 on the CPU makes one seed give the same network in any dtype and device.
def _scaled_normal(shape: tuple[int, int], gen: torch.Generator) -> Tensor:
    """N(0, 1/n_in): standard deviation 1/sqrt(n_in), the notes' default."""
    return torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])


def _scaled_uniform(shape: tuple[int, int], gen: torch.Generator) -> Tensor:
    """U(-1/sqrt(n_in), 1/sqrt(n_in)) (also the range of ``nn.Linear``'s default)."""
    bound = 1 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def _standard_normal(shape: tuple[int, int], gen: torch.Generator) -> Tensor:
    """N(0, 1): the notes' "too large" case, which saturates the sigmoids of wide layers."""
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _zeros(shape: tuple[int, int], gen: torch.Generator) -> Tensor:
    """All zeros: every hidden unit of a layer stays identical (the symmetry problem)."""
    return torch.zeros(shape, dtype=torch.float64)


INITS: dict[str, Callable[[tuple[int, int], torch.Generator], Tensor]] = {
    "scaled_normal": _scaled_normal,
    "scaled_uniform": _scaled_uniform,
    "standard_normal": _standard_normal,
    "zeros": _zeros,
}


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise ValueError(f"sizes must be a list of layer sizes [n_in, ..., n_out], got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes={list(sizes)} has no layer: give at least [n_in, n_out] (e.g. [64, 30, 10])")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"sizes={list(sizes)}: every layer size must be an integer >= 1, got {s!r}")
    return list(sizes)


class SigmoidMLP(nn.Module):
    """A sigmoid multilayer perceptron of any depth (the notes' forward pass, any number of layers).

    Args:
        sizes: ``[n_in, h_1, ..., n_out]``, at least two entries (one layer), each >= 1.
        init: weight initialization, one of :data:`INITS`: ``"scaled_normal"`` (default,
            N(0, 1/n_in)), ``"scaled_uniform"``, ``"standard_normal"``, ``"zeros"``.
        bias_init: the value every bias starts at (the notes suggest 0 or 0.01).
        seed: seed for the weights; ``None`` draws from torch's global generator.

    Parameters are named ``layers.{i}.weight`` ``(out, in)`` and ``layers.{i}.bias`` ``(out,)``.
    The network is created in float32 on the CPU; use ``.to(dtype, device)`` as for any module.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        init: str = "scaled_normal",
        bias_init: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.sizes = _check_sizes(sizes)
        n_params = sum((n_in + 1) * n_out for n_in, n_out in zip(self.sizes, self.sizes[1:]))
        check_fits_in_memory(
            n_params * 8 * 4,  # float64 weights, their gradients, an optimizer buffer and a copy
            f"a network of sizes {self.sizes} ({n_params:,} parameters)",
            "give smaller layer sizes",
        )
        if init not in INITS:
            raise ValueError(f"init={init!r} is not a known scheme: use one of {sorted(INITS)}")
        if (
            isinstance(bias_init, bool)
            or not isinstance(bias_init, (int, float))
            or not math.isfinite(bias_init)
        ):
            raise ValueError(f"bias_init={bias_init!r} must be a finite number (e.g. 0.0 or 0.01)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed={seed!r} must be a non-negative integer or None")
        self.init, self.bias_init, self.seed = init, float(bias_init), seed
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(self.sizes, self.sizes[1:]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the weights again with ``init`` and ``seed``; set every bias to ``bias_init``."""
        # Without a seed, the seed itself comes from torch's global generator (torch.manual_seed).
        seed = int(torch.randint(0, 2**62, ()).item()) if self.seed is None else self.seed
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.copy_(INITS[self.init](tuple(layer.weight.shape), gen))
                layer.bias.fill_(self.bias_init)

    @property
    def weights(self) -> list[Tensor]:
        """``[W_1, ..., W_L]``, each ``(out, in)``."""
        return [layer.weight for layer in self.layers]

    @property
    def biases(self) -> list[Tensor]:
        """``[b_1, ..., b_L]``, each ``(out,)``."""
        return [layer.bias for layer in self.layers]

    def forward_pass(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(zs, activations)`` of every layer, as backprop needs them (see :func:`feedforward`)."""
        return feedforward(self.weights, self.biases, x)

    def forward(self, x: Tensor) -> Tensor:
        """``y_hat = a_L``, ``(n, n_out)``."""
        return self.forward_pass(x)[1][-1]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, init={self.init!r}, bias_init={self.bias_init}"


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
