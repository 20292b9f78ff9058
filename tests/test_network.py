"""The network: forward pass, initialization schemes, the symmetry problem."""

import math

import pytest
import torch

from mlp_torch import SigmoidMLP, manual_gradients
from mlp_torch.model.network import feedforward


def test_forward_is_the_notes_forward_pass():
    net = SigmoidMLP([4, 3, 2], seed=0).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    W1, W2 = net.weights
    b1, b2 = net.biases
    a1 = torch.sigmoid(x @ W1.T + b1)  # a1 = f(W1 x + b1), rows as examples
    a2 = torch.sigmoid(a1 @ W2.T + b2)  # y_hat = a2 = f(W2 a1 + b2)
    torch.testing.assert_close(net(x), a2)
    zs, activations = net.forward_pass(x)
    assert [z.shape for z in zs] == [(5, 3), (5, 2)]
    assert [a.shape for a in activations] == [(5, 4), (5, 3), (5, 2)]
    assert activations[0] is x
    torch.testing.assert_close(activations[1], a1)


def test_parameter_names_and_layout():
    net = SigmoidMLP([64, 30, 10])
    assert [(n, tuple(p.shape)) for n, p in net.named_parameters()] == [
        ("layers.0.weight", (30, 64)),
        ("layers.0.bias", (30,)),
        ("layers.1.weight", (10, 30)),
        ("layers.1.bias", (10,)),
    ]


def test_scaled_normal_std_is_one_over_sqrt_n_in():
    net = SigmoidMLP([400, 300, 200], seed=0)
    for W in net.weights:
        n_in = W.shape[1]
        # sample std of N = out*in draws has relative standard error ~ 1/sqrt(2N)
        tol = 4 / math.sqrt(2 * W.numel())
        assert abs(W.std().item() * math.sqrt(n_in) - 1) < tol
        assert abs(W.mean().item()) < 4 / math.sqrt(n_in * W.numel())


def test_init_schemes():
    u = SigmoidMLP([100, 50], init="scaled_uniform", seed=0).weights[0]
    assert u.abs().max() <= 1 / math.sqrt(100) and u.abs().max() > 0.9 / math.sqrt(100)
    s = SigmoidMLP([100, 50], init="standard_normal", seed=0).weights[0]
    assert abs(s.std().item() - 1) < 0.05
    z = SigmoidMLP([100, 50], init="zeros", seed=0).weights[0]
    assert torch.count_nonzero(z) == 0
    b = SigmoidMLP([3, 4, 2], bias_init=0.01).biases
    assert all(torch.all(bias == 0.01) for bias in b)


def test_seed_reproducible_across_dtypes():
    a, b = SigmoidMLP([5, 4, 3], seed=42), SigmoidMLP([5, 4, 3], seed=42).double()
    c = SigmoidMLP([5, 4, 3], seed=43)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.double(), q, rtol=1e-7, atol=0)
    assert not torch.equal(a.weights[0], c.weights[0])
    torch.manual_seed(0)
    d = SigmoidMLP([5, 4, 3])
    torch.manual_seed(0)
    e = SigmoidMLP([5, 4, 3])
    assert torch.equal(d.weights[0], e.weights[0])


def _train(net, x, y, steps=20, lr=2.0):
    for _ in range(steps):
        g = manual_gradients(net, x, y)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p -= lr * g[name]


def test_zero_init_keeps_hidden_units_identical_scaled_does_not():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    y = torch.rand(16, 2, generator=gen, dtype=torch.float64)
    zero = SigmoidMLP([3, 5, 4, 2], init="zeros", bias_init=0.01).double()
    _train(zero, x, y)
    assert zero.weights[-1].abs().sum() > 0  # it did learn something
    for layer in zero.layers[:-1]:  # every hidden unit: the same incoming weights and bias
        assert torch.allclose(layer.weight, layer.weight[:1].expand_as(layer.weight), rtol=0, atol=1e-15)
        assert torch.allclose(layer.bias, layer.bias[:1].expand_as(layer.bias), rtol=0, atol=1e-15)
    scaled = SigmoidMLP([3, 5, 4, 2], seed=0, bias_init=0.01).double()
    _train(scaled, x, y)
    for layer in scaled.layers[:-1]:
        rows = layer.weight
        assert torch.cdist(rows, rows).triu(1)[torch.ones_like(rows @ rows.T).triu(1).bool()].min() > 1e-3


def test_feedforward_on_plain_tensors():
    W = [torch.ones(2, 3)]
    b = [torch.zeros(2)]
    zs, acts = feedforward(W, b, torch.ones(1, 3))
    torch.testing.assert_close(zs[0], torch.full((1, 2), 3.0))
    torch.testing.assert_close(acts[1], torch.sigmoid(torch.full((1, 2), 3.0)))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(sizes=[3]), r"sizes=\[3\] has no layer"),
        (dict(sizes=[3, -1, 2]), r"every layer size must be an integer >= 1, got -1"),
        (dict(sizes=[3, 2.5]), r"got 2.5"),
        (dict(sizes="3,2"), r"sizes must be a list"),
        (dict(sizes=[3, 2], init="xavier"), r"init='xavier' is not a known scheme"),
        (dict(sizes=[3, 2], bias_init=float("inf")), r"bias_init=inf must be a finite number"),
        (dict(sizes=[3, 2], seed=-1), r"seed=-1 must be a non-negative integer"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SigmoidMLP(**kw)
