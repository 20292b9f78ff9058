"""Every hand-written gradient against autograd and central finite differences (float64)."""

import math
import random

import pytest
import torch

from mlp_torch import SigmoidMLP, autograd_gradients, gradient_check, manual_gradients, objective
from mlp_torch.model.gradcheck import finite_difference_gradients, relative_error
from tests.conftest import DEVICES


def random_problem(seed, depth, n, dtype=torch.float64, device="cpu", classes=False):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 6) for _ in range(depth + 1)]
    net = SigmoidMLP(sizes, seed=seed, bias_init=0.01).to(dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    if classes:
        y = torch.eye(sizes[-1], dtype=torch.float64)[torch.randint(sizes[-1], (n,), generator=gen)]
    else:
        y = torch.rand(n, sizes[-1], generator=gen, dtype=torch.float64)
    return net, x, y.to(dtype=dtype, device=device)


SETTINGS = [
    dict(cost=cost, l1=l1, l2=l2, reduction=reduction)
    for cost in ("quadratic", "cross_entropy")
    for l1, l2 in ((0.0, 0.0), (0.01, 0.0), (0.0, 0.03), (0.02, 0.05))
    for reduction in ("mean", "sum")
]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_manual_matches_autograd_and_finite_differences_float64(depth, n, kw):
    net, x, y = random_problem(seed=depth * 100 + n, depth=depth, n=n, classes=kw["cost"] == "cross_entropy")
    manual = manual_gradients(net, x, y, **kw)
    auto = autograd_gradients(net, x, y, **kw)
    fd = finite_difference_gradients(net, x, y, **kw)
    assert list(manual) == [name for name, _ in net.named_parameters()] == list(auto) == list(fd)
    for name, p in net.named_parameters():
        assert manual[name].shape == p.shape
        assert relative_error(manual[name], auto[name]) <= 1e-10, name
        assert relative_error(manual[name], fd[name]) <= 1e-6, name
    assert gradient_check(net, x, y, **kw).passed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
def test_float32_manual_matches_autograd(device, cost):
    net, x, y = random_problem(seed=7, depth=3, n=16, dtype=torch.float32, device=device)
    manual = manual_gradients(net, x, y, cost=cost, l1=0.01, l2=0.01)
    auto = autograd_gradients(net, x, y, cost=cost, l1=0.01, l2=0.01)
    for name in manual:
        assert manual[name].dtype == torch.float32 and manual[name].device.type == device
        torch.testing.assert_close(manual[name], auto[name])


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_check_report_on_device(device):
    net, x, y = random_problem(seed=3, depth=2, n=4, device=device)
    report = gradient_check(net, x, y, cost="cross_entropy", l2=0.1)
    assert report.passed, str(report)
    assert [pc.name for pc in report.parameters] == [n for n, _ in net.named_parameters()]
    assert "PASS" in str(report) and "FAIL" not in str(report)


def test_gradient_check_fails_on_wrong_gradient(monkeypatch):
    """The check must be able to fail: break the output delta and it reports FAIL."""
    from mlp_torch.model.costs import QuadraticCost

    net, x, y = random_problem(seed=1, depth=2, n=3)
    monkeypatch.setattr(QuadraticCost, "delta", staticmethod(lambda z, a, y: a - y))  # no f'(z)
    report = gradient_check(net, x, y)
    assert not report.passed
    assert any("manual_vs_autograd" in f for f in report.failures())
    assert "FAIL" in str(report)


def test_manual_gradients_need_no_autograd():
    net, x, y = random_problem(seed=2, depth=3, n=4)
    expected = autograd_gradients(net, x, y, l1=0.1)
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        got = manual_gradients(net, x, y, l1=0.1)
    for name in got:
        assert not got[name].requires_grad
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-14)


def test_autograd_gradients_leave_net_untouched():
    net, x, y = random_problem(seed=4, depth=2, n=3)
    autograd_gradients(net, x, y)
    assert all(p.grad is None for p in net.parameters())


def test_objective_convention():
    """J = (1/n) sum_i C_i + l1 sum|w| + l2 sum w^2 (mean); sum_i C_i + penalties (sum);
    biases are never penalized."""
    net, x, y = random_problem(seed=5, depth=2, n=6)
    y_hat = net(x)
    costs = 0.5 * ((y_hat - y) ** 2).sum(dim=1)
    l1_term = sum(p.abs().sum() for n, p in net.named_parameters() if n.endswith("weight"))
    l2_term = sum((p**2).sum() for n, p in net.named_parameters() if n.endswith("weight"))
    j_mean = objective(net, x, y, l1=0.1, l2=0.2)
    j_sum = objective(net, x, y, l1=0.1, l2=0.2, reduction="sum")
    torch.testing.assert_close(j_mean, costs.mean() + 0.1 * l1_term + 0.2 * l2_term)
    torch.testing.assert_close(j_sum, costs.sum() + 0.1 * l1_term + 0.2 * l2_term)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.add_(5.0)
    shifted = objective(net, x, y, l1=0.1, l2=0.2) - objective(net, x, y)
    torch.testing.assert_close(shifted, 0.1 * l1_term + 0.2 * l2_term)


def test_cross_entropy_value_and_saturation():
    net = SigmoidMLP([1, 2], seed=0).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[50.0], [-50.0]]))
    x = torch.tensor([[1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # both outputs saturated the wrong way
    j = objective(net, x, y, cost="cross_entropy")
    assert math.isfinite(j.item()) and abs(j.item() - 100.0) < 1e-9
    y_ok = torch.tensor([[0.3, 0.6]], dtype=torch.float64)
    net2, x2 = SigmoidMLP([3, 2], seed=9).double(), torch.randn(1, 3, dtype=torch.float64)
    a = net2(x2)
    expected = -(y_ok * a.log() + (1 - y_ok) * (1 - a).log()).sum()
    torch.testing.assert_close(objective(net2, x2, y_ok, cost="cross_entropy"), expected)


def test_tiny_network_worked_by_hand():
    """A 2-2-1 network, quadratic cost, x = (1, 0), y = 1.

    W1 = [[0.5, -1], [-0.5, 2]], b1 = 0  ->  z1 = (0.5, -0.5)
    a1 = (f(0.5), f(-0.5)) = (0.622459, 0.377541)           (they sum to 1)
    W2 = [[1, 1]], b2 = 0               ->  z2 = 1.0, y_hat = a2 = f(1) = 0.731059
    J = 1/2 (0.731059 - 1)^2 = 0.036165
    delta2 = (a2 - y) a2 (1 - a2) = -0.268941 * 0.731059 * 0.268941 = -0.052877
    dJ/dW2 = delta2 a1^T = (-0.032914, -0.019963);  dJ/db2 = -0.052877
    f'(z1) = a1 (1 - a1) = 0.622459 * 0.377541 = 0.235004 for both units
    delta1 = (W2^T delta2) * f'(z1) = -0.052877 * 0.235004 = -0.012426 for both units
    dJ/dW1 = delta1 x^T = [[-0.012426, 0], [-0.012426, 0]];  dJ/db1 = (-0.012426, -0.012426)
    """
    net = SigmoidMLP([2, 2, 1]).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[0.5, -1.0], [-0.5, 2.0]]))
        net.layers[1].weight.copy_(torch.tensor([[1.0, 1.0]]))
        for b in net.biases:
            b.zero_()
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0]], dtype=torch.float64)
    assert objective(net, x, y).item() == pytest.approx(0.036165, abs=1e-6)
    g = manual_gradients(net, x, y)
    expected = {
        "layers.1.weight": [[-0.032914, -0.019963]],
        "layers.1.bias": [-0.052877],
        "layers.0.weight": [[-0.012426, 0.0], [-0.012426, 0.0]],
        "layers.0.bias": [-0.012426, -0.012426],
    }
    for name, value in expected.items():
        torch.testing.assert_close(g[name], torch.tensor(value, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: (x[:, :2], y), r"x must have shape \(n, 3\).*got \(4, 2\)"),
        (lambda x, y: (x, y[:, :1]), r"y must have shape \(n, 2\).*got \(4, 1\)"),
        (lambda x, y: (x[0], y), r"x must have shape \(n, 3\).*got \(3,\)"),
        (lambda x, y: (x, y[:3]), r"x has 4 examples but y has 3"),
        (lambda x, y: (x.float(), y), r"x has dtype torch.float32 but the network is torch.float64"),
        (lambda x, y: (x.numpy(), y), r"x must be a torch.Tensor"),
    ],
)
def test_bad_batches_raise_value_error(make, match):
    net = SigmoidMLP([3, 4, 2], seed=0).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    bx, by = make(x, y)
    for fn in (objective, manual_gradients, autograd_gradients, gradient_check):
        with pytest.raises(ValueError, match=match):
            fn(net, bx, by)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(cost="hinge"), r"cost='hinge' is not a known cost"),
        (dict(l1=-0.1), r"l1=-0.1 must be a finite number >= 0"),
        (dict(l2=float("nan")), r"l2=nan must be a finite number >= 0"),
        (dict(reduction="max"), r"reduction='max' is not known"),
    ],
)
def test_bad_objective_settings_raise_value_error(kw, match):
    net = SigmoidMLP([3, 2], seed=0)
    with pytest.raises(ValueError, match=match):
        manual_gradients(net, torch.randn(2, 3), torch.rand(2, 2), **kw)


def test_a_gradient_at_the_finite_differences_rounding_passes_and_a_wrong_one_still_fails(
    monkeypatch, capsys
):
    """With reduction="sum" a bias gradient of ~3e-5 differs from float64 central differences by
    their rounding (~4e-11 per entry: relative 1e-6, over the bound): it passes, marked "*"; the
    same gradient 1% off is ten thousand times that rounding and fails."""
    import mlp_torch.model.gradcheck as gradcheck
    from mlp_torch.cli.command import gradcheck as gradcheck_command

    args = dict(sizes=[2, 3, 3, 1], reduction="sum", l2=0.01, init="scaled_uniform")
    assert gradcheck_command(**args)
    out = capsys.readouterr().out
    assert "layers.0.bias   3" in out and "FAIL" not in out  # "*" where rounding puts it over 1e-6

    right = gradcheck.manual_gradients

    def one_percent_off(*a, **kw):
        grads = right(*a, **kw)
        return {**grads, "layers.0.bias": grads["layers.0.bias"] * 1.01}

    monkeypatch.setattr(gradcheck, "manual_gradients", one_percent_off)
    assert not gradcheck_command(**args)
    out = capsys.readouterr().out
    assert "FAIL layers.0.bias: manual_vs_fd relative error" in out and "> rounding" in out
