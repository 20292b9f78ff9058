"""Three-way gradient check: hand-written backprop vs autograd vs central finite differences.

Finite differences are always computed in float64 (on a float64 copy of the network and batch),
whatever the dtype under test: ``dJ/dp ~ (J(p + eps) - J(p - eps)) / (2 eps)`` per entry.
The relative error of two gradients ``g1, g2`` of one parameter is
``||g1 - g2|| / max(||g1||, ||g2||, tiny)``. Against finite differences a parameter also passes
when ``||g - g_fd||`` is within the differences' own rounding, ``fd_noise = 10 u |J| sqrt(n) / eps``
(``u`` float64's unit roundoff, ``n`` the parameter's entries): a gradient as small as that noise
(e.g. ~1e-5 with ``reduction="sum"``) cannot be checked relatively, while a wrong one still fails.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mlp_torch.limits import check_fits_in_memory
from mlp_torch.model.backprop import (
    _check,
    autograd_gradients,
    manual_gradients,
    objective,
    objective_terms,
    reduction_scale,
)
from mlp_torch.model.network import SigmoidMLP

__all__ = [
    "GradientCheckReport",
    "ParameterCheck",
    "TOLERANCES",
    "check_gradient_check_size",
    "finite_difference_gradients",
    "gradient_check",
    "relative_error",
]

# Pass/fail bounds on the relative error, by the dtype under test: manual vs autograd (the same
# arithmetic in a different order) and either of them vs float64 finite differences.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"manual_vs_autograd": 1e-10, "vs_finite_differences": 1e-6},
    torch.float32: {"manual_vs_autograd": 1e-4, "vs_finite_differences": 1e-3},
}
PAIRS = ("manual_vs_autograd", "manual_vs_fd", "autograd_vs_fd")
_TINY = 1e-300
UNIT_ROUNDOFF = 2.0**-53  # float64's: each J is computed to about this relative error (times a few)
# Finite differences evaluate J twice per parameter: a check beyond these sizes runs for minutes.
MAX_CHECKED_PARAMETERS = 100_000
MAX_CHECK_WORK = 10**11  # multiply-adds of all those evaluations together (about a minute)


def check_gradient_check_size(sizes: list[int], batch_size: int) -> None:
    """Raise ``ValueError`` if a gradient check of a network of ``sizes`` on ``batch_size``
    examples cannot fit in memory or would run for more than about a minute."""
    layers = list(zip(sizes, sizes[1:]))
    n_params = sum((n_in + 1) * n_out for n_in, n_out in layers)
    check_fits_in_memory(
        batch_size * sum(sizes) * 8 * 6,  # float64: the batch and each layer's z and a, three ways
        f"a gradient check on a batch of {batch_size:,} examples of a network of sizes {sizes}",
        "give a smaller --batch_size",
    )
    work = 2 * n_params * batch_size * sum(n_in * n_out for n_in, n_out in layers)
    if n_params > MAX_CHECKED_PARAMETERS or work > MAX_CHECK_WORK:
        raise ValueError(
            f"a gradient check of sizes {sizes} on {batch_size:,} examples evaluates J twice for each of "
            f"its {n_params:,} parameters ({work:.2g} multiply-adds): give at most "
            f"{MAX_CHECKED_PARAMETERS:,} parameters and {MAX_CHECK_WORK:.0e} multiply-adds (smaller --sizes "
            'or --batch_size, e.g. --sizes "[64, 30, 10]")'
        )


def relative_error(g1: Tensor, g2: Tensor) -> float:
    """``||g1 - g2|| / max(||g1||, ||g2||, tiny)`` in float64 (0 when both are zero)."""
    g1, g2 = g1.double(), g2.double()
    return float(
        torch.linalg.vector_norm(g1 - g2)
        / max(float(torch.linalg.vector_norm(g1)), float(torch.linalg.vector_norm(g2)), _TINY)
    )


@torch.no_grad()
def finite_difference_gradients(
    net: SigmoidMLP,
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    reduction: str = "mean",
    eps: float = 1e-6,
) -> dict[str, Tensor]:
    """Central finite differences of ``J`` for every parameter entry, in float64."""
    net64 = copy.deepcopy(net).double()
    x64, y64 = x.double(), y.double()
    weights, biases = net64.weights, net64.biases
    scale = reduction_scale(reduction, x.shape[0])

    def J() -> float:
        return float(objective_terms(weights, biases, x64, y64, cost=cost, l1=l1, l2=l2, scale=scale)["J"])

    grads = {}
    for name, p in net64.named_parameters():
        g = torch.empty_like(p)
        flat, gflat = p.view(-1), g.view(-1)
        for i in range(flat.numel()):
            w = float(flat[i])
            flat[i] = w + eps
            j_plus = J()
            flat[i] = w - eps
            j_minus = J()
            flat[i] = w
            gflat[i] = (j_plus - j_minus) / (2 * eps)
        grads[name] = g
    return grads


@dataclass
class ParameterCheck:
    """One parameter's comparison: max absolute and relative error for each pair."""

    name: str
    shape: tuple[int, ...]
    max_abs: dict[str, float] = field(default_factory=dict)
    rel: dict[str, float] = field(default_factory=dict)
    diff: dict[str, float] = field(default_factory=dict)  # ||g1 - g2||
    fd_noise: float = 0.0  # the finite differences' rounding, ||.|| over the parameter's entries

    def within(self, pair: str, tol: float) -> bool:
        """Whether ``pair`` agrees: relative error within ``tol`` or, against finite differences,
        the difference within their rounding (NaN fails)."""
        if self.rel[pair] <= tol:
            return True
        return pair != "manual_vs_autograd" and self.diff[pair] <= self.fd_noise


@dataclass
class GradientCheckReport:
    """The result of :func:`gradient_check`: per-parameter errors and the verdict."""

    dtype: torch.dtype
    tolerances: dict[str, float]
    parameters: list[ParameterCheck]

    def failures(self) -> list[str]:
        """``"name: pair rel=... > tol"`` for every comparison over its tolerance."""
        out = []
        for pc in self.parameters:
            for pair in PAIRS:
                tol = self.tolerances[
                    "manual_vs_autograd" if pair == "manual_vs_autograd" else "vs_finite_differences"
                ]
                if not pc.within(pair, tol):
                    out.append(
                        f"{pc.name}: {pair} relative error {pc.rel[pair]:.3g} > {tol:g}"
                        + (
                            f" and difference {pc.diff[pair]:.3g} > rounding {pc.fd_noise:.3g}"
                            if "fd" in pair
                            else ""
                        )
                    )
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    @property
    def max_rel(self) -> dict[str, float]:
        """The largest relative error of each pair over all parameters."""
        return {pair: max(pc.rel[pair] for pc in self.parameters) for pair in PAIRS}

    def __str__(self) -> str:
        head = (
            f"{'parameter':<16}{'shape':<12}{'manual~autograd':>18}{'manual~fd':>14}"
            f"{'autograd~fd':>14}{'max abs err':>14}  result"
        )
        lines = [head, "-" * len(head)]
        failed = {f.split(":")[0] for f in self.failures()}
        tol = self.tolerances
        rounded = False  # a relative error over its bound, the difference within FD's rounding
        for pc in self.parameters:
            marks = {}
            for pair in ("manual_vs_fd", "autograd_vs_fd"):
                over = not pc.rel[pair] <= tol["vs_finite_differences"]
                marks[pair] = "*" if over and pc.within(pair, tol["vs_finite_differences"]) else " "
                rounded |= marks[pair] == "*"
            lines.append(
                f"{pc.name:<16}{'x'.join(map(str, pc.shape)):<12}"
                f"{pc.rel['manual_vs_autograd']:>18.2e}{pc.rel['manual_vs_fd']:>13.2e}{marks['manual_vs_fd']}"
                f"{pc.rel['autograd_vs_fd']:>13.2e}{marks['autograd_vs_fd']}"
                f"{max(pc.max_abs.values()):>14.2e}  {'FAIL' if pc.name in failed else 'PASS'}"
            )
        lines.append(
            f"relative errors; {str(self.dtype).removeprefix('torch.')} tolerances: manual~autograd "
            f"<= {tol['manual_vs_autograd']:g}, vs finite differences (float64) <= "
            f"{tol['vs_finite_differences']:g}: {'PASS' if self.passed else 'FAIL'}"
        )
        if rounded:
            lines.append(
                "* a gradient as small as the finite differences' rounding: the difference is within it "
                "(10 u |J| sqrt(n) / eps)"
            )
        return "\n".join(lines)


def gradient_check(
    net: SigmoidMLP,
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    reduction: str = "mean",
    eps: float = 1e-6,
    tolerances: dict[str, float] | None = None,
) -> GradientCheckReport:
    """Compare :func:`manual_gradients`, :func:`autograd_gradients` and float64 finite
    differences for every parameter of ``net`` on ``(x, y)``.

    Tolerances default to :data:`TOLERANCES` for the network's dtype (float32's for others).
    """
    _check(net, x, y, cost, l1, l2, reduction)
    kw = dict(cost=cost, l1=l1, l2=l2, reduction=reduction)
    manual = manual_gradients(net, x, y, **kw)
    auto = autograd_gradients(net, x, y, **kw)
    fd = finite_difference_gradients(net, x, y, eps=eps, **kw)
    dtype = net.weights[0].dtype
    with torch.no_grad():  # |J| in float64, the scale of the finite differences' rounding
        J = float(objective(copy.deepcopy(net).double(), x.double(), y.double(), **kw))
    checks = []
    for name, p in net.named_parameters():
        m, a, f = manual[name], auto[name], fd[name].to(p.device)
        pc = ParameterCheck(
            name, tuple(p.shape), fd_noise=10 * UNIT_ROUNDOFF * abs(J) * p.numel() ** 0.5 / eps
        )
        for pair, (g1, g2) in zip(PAIRS, ((m, a), (m, f), (a, f))):
            pc.max_abs[pair] = float((g1.double() - g2.double()).abs().max())
            pc.diff[pair] = float(torch.linalg.vector_norm(g1.double() - g2.double()))
            pc.rel[pair] = relative_error(g1, g2)
        checks.append(pc)
    tol = tolerances or TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return GradientCheckReport(dtype, dict(tol), checks)
