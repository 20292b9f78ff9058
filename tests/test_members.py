"""The equations on a leading member dimension: K stacked networks, one per setting, through the
very functions that train one network (float64).

Each stacked result is compared with K separate runs of the same functions on 2-D tensors, and
the stacked gradient with autograd and central finite differences of the stacked objective.
"""

import pytest
import torch
from torch import nn

from mlp_torch.model.backprop import backprop, objective_terms
from mlp_torch.model.gradcheck import relative_error
from mlp_torch.model.network import SigmoidMLP, feedforward
from mlp_torch.optim import GradientDescent, HeavyBall, Momentum

K = 3


def stacked_problem(sizes, n, shared_x, classes, seed=0):
    """K networks of ``sizes`` with different seeds and bias_init, stacked; x shared or per member."""
    nets = [SigmoidMLP(sizes, seed=seed + k, bias_init=0.01 * k).double() for k in range(K)]
    weights = [torch.stack([net.weights[i].detach() for net in nets]) for i in range(len(sizes) - 1)]
    biases = [torch.stack([net.biases[i].detach() for net in nets]) for i in range(len(sizes) - 1)]
    gen = torch.Generator().manual_seed(seed)
    shape = (n, sizes[0]) if shared_x else (K, n, sizes[0])
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if classes:
        y = torch.eye(sizes[-1], dtype=torch.float64)[torch.randint(sizes[-1], shape[:-1], generator=gen)]
    else:
        y = torch.rand(*shape[:-1], sizes[-1], generator=gen, dtype=torch.float64)
    return nets, weights, biases, x, y


def member(t, k):
    """Member k's slice of a stacked tensor, or the tensor itself if it is shared."""
    return t[k] if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == K else t


PENALTIES = [
    (0.0, 0.0),
    (0.01, 0.03),
    (
        torch.tensor([0.0, 0.01, 0.02], dtype=torch.float64),
        torch.tensor([0.03, 0.0, 0.05], dtype=torch.float64),
    ),
]


@pytest.mark.parametrize("sizes", [[3, 2], [4, 5, 3], [3, 4, 5, 2]], ids=str)
@pytest.mark.parametrize("shared_x", [True, False], ids=["shared_x", "own_x"])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("l1,l2", PENALTIES, ids=["no_penalty", "same_penalty", "own_penalty"])
def test_stacked_backprop_equals_each_member_alone(sizes, shared_x, cost, l1, l2):
    nets, weights, biases, x, y = stacked_problem(sizes, 5, shared_x, cost == "cross_entropy")
    bp = backprop(weights, biases, x, y, cost=cost, l1=l1, l2=l2, scale=0.2)
    assert bp.J.shape == bp.cost.shape == bp.l1.shape == bp.l2.shape == (K,)
    for k in range(K):
        xk, yk = (x, y) if shared_x else (x[k], y[k])
        alone = backprop(
            [w[k] for w in weights], [b[k] for b in biases], xk, yk, cost=cost, l1=member(l1, k),
            l2=member(l2, k), scale=0.2,
        )  # fmt: skip
        for name in ("J", "cost", "l1", "l2"):
            torch.testing.assert_close(getattr(bp, name)[k], getattr(alone, name), rtol=1e-13, atol=1e-15)
        for stacked, single in zip(bp.grad_W + bp.grad_b, alone.grad_W + alone.grad_b):
            assert relative_error(stacked[k], single) <= 1e-13


@pytest.mark.parametrize("shared_x", [True, False], ids=["shared_x", "own_x"])
def test_stacked_gradient_matches_autograd_and_finite_differences(shared_x):
    """The members' J are independent, so the gradient of their sum is each member's gradient."""
    l1, l2 = PENALTIES[2]
    _, weights, biases, x, y = stacked_problem([3, 4, 2], 4, shared_x, classes=True, seed=5)
    bp = backprop(weights, biases, x, y, cost="cross_entropy", l1=l1, l2=l2, scale=0.25)
    params = [p.clone().requires_grad_() for p in weights + biases]
    L = len(weights)

    def total(ps):
        terms = objective_terms(ps[:L], ps[L:], x, y, cost="cross_entropy", l1=l1, l2=l2, scale=0.25)
        return terms["J"].sum()

    auto = torch.autograd.grad(total(params), params)
    eps = 1e-6
    for i, (manual, p) in enumerate(zip(bp.grad_W + bp.grad_b, weights + biases)):
        assert relative_error(manual, auto[i]) <= 1e-10
        fd = torch.zeros_like(p)
        for j in range(p.numel()):
            ps = [q.clone() for q in weights + biases]
            ps[i].view(-1)[j] += eps
            up = total(ps)
            ps[i].view(-1)[j] -= 2 * eps
            fd.view(-1)[j] = (up - total(ps)) / (2 * eps)
        assert relative_error(manual, fd) <= 1e-6


def test_shared_input_is_one_product_and_equals_the_broadcast_product():
    _, weights, biases, x, _ = stacked_problem([4, 6, 3], 7, shared_x=True, classes=False)
    zs, activations = feedforward(weights, biases, x)
    assert [z.shape for z in zs] == [(K, 7, 6), (K, 7, 3)]
    zs_own, _ = feedforward(weights, biases, x.expand(K, 7, 4))
    for z, z_own in zip(zs, zs_own):
        torch.testing.assert_close(z, z_own, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    "factory",
    [
        lambda params, lr, alpha: GradientDescent(params, lr=lr),
        lambda params, lr, alpha: Momentum(params, lr=lr, alpha=alpha),
        lambda params, lr, alpha: HeavyBall(params, lr=lr, alpha=alpha),
        lambda params, lr, alpha: HeavyBall(params, lr=lr, alpha=alpha, nesterov=True),
    ],
    ids=["GradientDescent", "Momentum", "HeavyBall", "Nesterov"],
)
def test_optimizers_with_one_rate_per_member_equal_each_member_alone(factory):
    lrs = torch.tensor([0.05, 0.2, 0.5], dtype=torch.float64)
    alphas = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    W0 = torch.randn(K, 4, 3, generator=gen, dtype=torch.float64)
    b0 = torch.randn(K, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(K, 4, 3, generator=gen, dtype=torch.float64)
    W, b = nn.Parameter(W0.clone()), nn.Parameter(b0.clone())
    opt = factory([W, b], lrs, alphas)
    alone = [(nn.Parameter(W0[k].clone()), nn.Parameter(b0[k].clone())) for k in range(K)]
    opts = [factory(list(p), float(lrs[k]), float(alphas[k])) for k, p in enumerate(alone)]
    for _ in range(10):
        W.grad, b.grad = W.detach() - target, torch.sin(b.detach())  # any gradient, different per member
        opt.step()
        for (Wk, bk), opt_k, t in zip(alone, opts, target):
            Wk.grad, bk.grad = Wk.detach() - t, torch.sin(bk.detach())
            opt_k.step()
    for k, (Wk, bk) in enumerate(alone):
        torch.testing.assert_close(W[k], Wk, rtol=0, atol=1e-14)
        torch.testing.assert_close(b[k], bk, rtol=0, atol=1e-14)


def test_per_member_rates_are_checked_one_by_one():
    W = nn.Parameter(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        GradientDescent([W], lr=torch.tensor([0.5, -1.0]))
    with pytest.raises(ValueError, match="Invalid momentum alpha: 1.0"):
        Momentum([W], lr=torch.tensor([0.5, 1.0]), alpha=torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("sizes", [[3, 2], [4, 5, 3], [3, 4, 5, 2]], ids=str)
@pytest.mark.parametrize("shared_x", [True, False], ids=["shared_x", "own_x"])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
def test_stacked_fused_backprop_equals_the_readable_one(sizes, shared_x, cost):
    from mlp_torch.model.fused import fused_backprop

    _, weights, biases, x, y = stacked_problem(sizes, 5, shared_x, cost == "cross_entropy")
    bp = backprop(weights, biases, x, y, cost=cost, scale=0.2)
    grad_W, grad_b = [torch.empty_like(W) for W in weights], [torch.empty_like(b) for b in biases]
    z_out = torch.empty(K, 5, sizes[-1], dtype=torch.float64)
    z = fused_backprop(weights, biases, x, y, grad_W, grad_b, cost=cost, scale=0.2, z_out=z_out)
    assert z is z_out
    torch.testing.assert_close(z_out, feedforward(weights, biases, x)[0][-1], rtol=1e-13, atol=1e-15)
    for fused, readable in zip(grad_W + grad_b, bp.grad_W + bp.grad_b):
        assert relative_error(fused, readable) <= 1e-12


def test_a_member_status_as_a_dict_is_asdicts_own_copy():
    """MemberStatus.as_dict (what a sweep's checkpoints store) is dataclasses.asdict's result, in
    its order, its dicts copies: changing the status later changes no checkpoint."""
    from dataclasses import asdict

    from mlp_torch.train.module import MemberStatus

    status = MemberStatus(epochs=5, stopped="converged", why="J settled", best_epoch=3,
                          best={"val/J": 0.5, "val/acc": 0.9}, last={"train/J": 0.4})  # fmt: skip
    got = status.as_dict()
    assert got == asdict(status) and list(got) == list(asdict(status))
    status.best["val/J"], status.last["train/J"] = 0.1, 0.2
    assert got["best"]["val/J"] == 0.5 and got["last"]["train/J"] == 0.4
