"""Tests for mlp_torch.optim: each optimizer against its formula restated here in plain Python.

The fixed problem is float64 least squares, C(w) = 1/2 ||A w - b||^2 with gradient
A^T (A w - b), written by hand so that the same gradient can feed the optimizer (through
``p.grad``) and the restated formula.
"""

import copy
import io
import math
import re

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR, StepLR

from mlp_torch.optim import GradientDescent, HeavyBall, Momentum

STEPS = 25
TOL = {"rtol": 0.0, "atol": 1e-12}

_gen = torch.Generator().manual_seed(0)
A = torch.randn(6, 3, generator=_gen, dtype=torch.float64)  # (6, 3)
b = torch.randn(6, generator=_gen, dtype=torch.float64)  # (6,)
W0 = torch.randn(3, generator=_gen, dtype=torch.float64)  # (3,)


def grad_fn(w):
    """Hand-written gradient of C(w) = 1/2 ||A w - b||^2, no autograd."""
    return A.T @ (A @ w - b)  # (3,)


def run(opt_factory, steps=STEPS, scheduler_factory=None):
    """Drive an optimizer with hand-written gradients; return the weights after each step."""
    w = nn.Parameter(W0.clone())
    opt = opt_factory([w])
    scheduler = scheduler_factory(opt) if scheduler_factory else None
    trajectory = []
    for _ in range(steps):
        w.grad = grad_fn(w.detach())
        opt.step()
        trajectory.append(w.detach().clone())
        if scheduler:
            scheduler.step()
    return torch.stack(trajectory)


# ---- the formulas, restated -------------------------------------------------------------------


def gradient_descent_formula(lr, steps=STEPS):
    w, trajectory = W0.clone(), []
    for _ in range(steps):
        w = w - lr * grad_fn(w)  # eq. 1
        trajectory.append(w)
    return torch.stack(trajectory)


def momentum_formula(lrs, alpha):
    """w(m+1) = w(m) + (1 - alpha) dw_bp(m) + alpha dw(m-1), dw(m) = w(m+1) - w(m), dw(-1) = 0."""
    w, dw_prev, trajectory = W0.clone(), torch.zeros(3, dtype=torch.float64), []
    for lr in lrs:
        dw_bp = -lr * grad_fn(w)
        w_next = w + (1 - alpha) * dw_bp + alpha * dw_prev
        dw_prev, w = w_next - w, w_next
        trajectory.append(w)
    return torch.stack(trajectory)


def heavy_ball_formula(lr, alpha, nesterov, steps=STEPS):
    """v = alpha v + g, v starting at 0; w -= lr v, or w -= lr (g + alpha v) for Nesterov."""
    w, v, trajectory = W0.clone(), torch.zeros(3, dtype=torch.float64), []
    for _ in range(steps):
        g = grad_fn(w)
        v = alpha * v + g
        w = w - lr * (g + alpha * v) if nesterov else w - lr * v
        trajectory.append(w)
    return torch.stack(trajectory)


# ---- trajectories equal the formulas ----------------------------------------------------------


def test_gradient_descent_matches_eq1():
    torch.testing.assert_close(
        run(lambda ps: GradientDescent(ps, lr=0.05)), gradient_descent_formula(0.05), **TOL
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_momentum_matches_notes_formula(alpha):
    torch.testing.assert_close(
        run(lambda ps: Momentum(ps, lr=0.05, alpha=alpha)), momentum_formula([0.05] * STEPS, alpha), **TOL
    )


def test_momentum_with_alpha_zero_is_gradient_descent():
    torch.testing.assert_close(
        run(lambda ps: Momentum(ps, lr=0.05, alpha=0.0)), run(lambda ps: GradientDescent(ps, lr=0.05)), **TOL
    )


@pytest.mark.parametrize(
    "scheduler_factory, lrs",
    [
        (lambda opt: StepLR(opt, step_size=5, gamma=0.5), [0.1 * 0.5 ** (m // 5) for m in range(STEPS)]),
        (lambda opt: ExponentialLR(opt, gamma=0.9), [0.1 * 0.9**m for m in range(STEPS)]),
    ],
    ids=["StepLR", "ExponentialLR"],
)
def test_momentum_with_scheduler_matches_formula_with_per_step_lr(scheduler_factory, lrs):
    trajectory = run(lambda ps: Momentum(ps, lr=0.1, alpha=0.8), scheduler_factory=scheduler_factory)
    torch.testing.assert_close(trajectory, momentum_formula(lrs, 0.8), **TOL)


def test_momentum_state_dw_is_the_last_weight_change():
    w = nn.Parameter(W0.clone())
    opt = Momentum([w], lr=0.05, alpha=0.9)
    for _ in range(3):
        before = w.detach().clone()
        w.grad = grad_fn(w.detach())
        opt.step()
        torch.testing.assert_close(opt.state[w]["dw"], w.detach() - before, **TOL)


@pytest.mark.parametrize("nesterov", [False, True])
def test_heavy_ball_matches_formula(nesterov):
    trajectory = run(lambda ps: HeavyBall(ps, lr=0.05, alpha=0.9, nesterov=nesterov))
    torch.testing.assert_close(trajectory, heavy_ball_formula(0.05, 0.9, nesterov), **TOL)


@pytest.mark.parametrize("nesterov", [False, True])
def test_heavy_ball_is_torch_sgd_momentum(nesterov):
    ours = run(lambda ps: HeavyBall(ps, lr=0.05, alpha=0.9, nesterov=nesterov))
    sgd = run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=nesterov))
    torch.testing.assert_close(ours, sgd, **TOL)


# ---- the damped rule against torch.optim.SGD --------------------------------------------------


class _SGDWithZeroBuffer(torch.optim.SGD):
    """SGD whose momentum buffer starts at zero instead of at the first raw gradient."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)


def test_momentum_equals_damped_sgd_only_with_zero_started_buffer():
    ours = run(lambda ps: Momentum(ps, lr=0.05, alpha=0.9))
    zero_started = run(lambda ps: _SGDWithZeroBuffer(ps, lr=0.05, momentum=0.9, dampening=0.9))
    torch.testing.assert_close(ours, zero_started, **TOL)
    sgd_default = run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.9))
    assert (ours - sgd_default).abs().max() > 1e-3


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_sgd_default_first_step_is_one_over_one_minus_alpha_times_ours(alpha):
    ours = run(lambda ps: Momentum(ps, lr=0.05, alpha=alpha), steps=1)[0] - W0
    sgd = run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=alpha, dampening=alpha), steps=1)
    torch.testing.assert_close(sgd[0] - W0, ours / (1 - alpha), **TOL)
    torch.testing.assert_close(ours, -(1 - alpha) * 0.05 * grad_fn(W0), **TOL)


def test_scheduler_rescales_a_gradient_buffer_but_not_dw():
    """Why the state is dw: a buffer of gradients times the new lr is not the notes' formula."""

    def step_lr(opt):
        return StepLR(opt, step_size=5, gamma=0.5)

    ours = run(lambda ps: Momentum(ps, lr=0.1, alpha=0.8), scheduler_factory=step_lr)
    buffer = run(
        lambda ps: _SGDWithZeroBuffer(ps, lr=0.1, momentum=0.8, dampening=0.8), scheduler_factory=step_lr
    )
    torch.testing.assert_close(ours[:5], buffer[:5], **TOL)  # same while lr is constant
    assert (ours[5:] - buffer[5:]).abs().max() > 1e-4  # differ once lr changes


def test_sgd_default_saturates_output_sigmoids_on_digits():
    """The Momentum docstring's claim, seed 0: lr = 1 tuned for the damped rule, alpha = 0.9."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X)  # (1797, 64)
    X = (X - X.mean(0)) / X.std(0).clamp_min(1e-12)
    Y = nn.functional.one_hot(torch.tensor(y), 10).double()  # (1797, 10)

    def output_saturation(opt_class, **kwargs):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 30), nn.Sigmoid(), nn.Linear(30, 10), nn.Sigmoid())
        model = model.double()
        opt = opt_class(model.parameters(), lr=1.0, **kwargs)
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(1))
        for m in range(20):
            idx = perm[10 * m : 10 * (m + 1)]  # mini-batches of 10
            opt.zero_grad()
            (0.5 * ((model(X[idx]) - Y[idx]) ** 2).sum(1).mean()).backward()  # quadratic cost
            opt.step()
        with torch.no_grad():
            out = model(X)  # (1797, 10)
        return ((out > 0.99) | (out < 0.01)).double().mean().item()

    assert output_saturation(Momentum, alpha=0.9) < 0.05
    assert output_saturation(torch.optim.SGD, momentum=0.9, dampening=0.9) > 0.5


# ---- resuming from a checkpoint ---------------------------------------------------------------

OPTIMIZERS = {
    "GradientDescent": lambda ps: GradientDescent(ps, lr=0.5),
    "Momentum": lambda ps: Momentum(ps, lr=0.5, alpha=0.9),
    "HeavyBall": lambda ps: HeavyBall(ps, lr=0.1, alpha=0.9),
    "HeavyBall-nesterov": lambda ps: HeavyBall(ps, lr=0.1, alpha=0.9, nesterov=True),
}


def _train(model, opt, scheduler, steps, start):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(32, 4, generator=gen, dtype=torch.float64)  # (32, 4)
    Y = torch.rand(32, 2, generator=gen, dtype=torch.float64)  # (32, 2)
    for m in range(start, start + steps):
        batch = slice(8 * (m % 4), 8 * (m % 4 + 1))  # mini-batches of 8, in turn
        opt.zero_grad()
        nn.functional.mse_loss(model(X[batch]), Y[batch]).backward()
        opt.step()
        scheduler.step()


@pytest.mark.parametrize("through_file", [False, True], ids=["in-memory", "torch.save"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_from_state_dict_is_exact(name, through_file):
    factory, k, total = OPTIMIZERS[name], 7, 20
    torch.manual_seed(0)
    model0 = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2), nn.Sigmoid()).double()

    straight = copy.deepcopy(model0)
    opt = factory(straight.parameters())
    _train(straight, opt, ExponentialLR(opt, gamma=0.95), total, start=0)

    first = copy.deepcopy(model0)
    opt = factory(first.parameters())
    scheduler = ExponentialLR(opt, gamma=0.95)
    _train(first, opt, scheduler, k, start=0)
    checkpoint = {"model": first.state_dict(), "opt": opt.state_dict(), "scheduler": scheduler.state_dict()}
    if through_file:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)

    resumed = copy.deepcopy(model0)
    resumed.load_state_dict(checkpoint["model"])
    opt = factory(resumed.parameters())
    scheduler = ExponentialLR(opt, gamma=0.95)
    opt.load_state_dict(checkpoint["opt"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _train(resumed, opt, scheduler, total - k, start=k)

    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


# ---- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [-0.1, 0.0, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "make",
    [
        lambda ps, lr: GradientDescent(ps, lr=lr),
        lambda ps, lr: Momentum(ps, lr=lr, alpha=0.5),
        lambda ps, lr: HeavyBall(ps, lr=lr, alpha=0.5),
    ],
)
def test_invalid_learning_rate_raises_naming_it(make, lr):
    with pytest.raises(ValueError, match=re.escape(f"Invalid learning rate: {lr} (must be")):
        make([nn.Parameter(W0.clone())], lr)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, math.nan, math.inf])
@pytest.mark.parametrize("opt_class", [Momentum, HeavyBall])
def test_invalid_alpha_raises_naming_it(opt_class, alpha):
    with pytest.raises(ValueError, match=re.escape(f"Invalid momentum alpha: {alpha} (must be")):
        opt_class([nn.Parameter(W0.clone())], lr=0.1, alpha=alpha)


def test_invalid_value_in_a_param_group_raises():
    w, v = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    with pytest.raises(ValueError, match=re.escape("Invalid momentum alpha: 1.0")):
        Momentum([{"params": [w]}, {"params": [v], "alpha": 1.0}], lr=0.1, alpha=0.5)
    opt = GradientDescent([w], lr=0.1)
    with pytest.raises(ValueError, match=re.escape("Invalid learning rate: -1")):
        opt.add_param_group({"params": [v], "lr": -1})


# ---- use as any PyTorch optimizer -------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_hand_written_and_autograd_gradients_give_the_same_steps(name):
    by_hand = run(OPTIMIZERS[name], steps=5)  # p.grad = grad_fn(w), assigned by hand
    w = nn.Parameter(W0.clone())
    opt = OPTIMIZERS[name]([w])
    by_autograd = []
    for _ in range(5):
        opt.zero_grad()
        (0.5 * ((A @ w - b) ** 2).sum()).backward()
        opt.step()
        by_autograd.append(w.detach().clone())
    torch.testing.assert_close(torch.stack(by_autograd), by_hand, **TOL)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_params_without_grad_are_skipped(name):
    w, frozen = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    opt = OPTIMIZERS[name]([w, frozen])
    for _ in range(3):
        w.grad = grad_fn(w.detach())
        opt.step()
    assert frozen.grad is None
    assert torch.equal(frozen, W0)
    assert frozen not in opt.state
    assert not torch.equal(w, W0)


def test_param_groups_with_different_lr_and_alpha():
    w, v = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    opt = Momentum([{"params": [w]}, {"params": [v], "lr": 0.02, "alpha": 0.3}], lr=0.05, alpha=0.9)
    trajectory_w, trajectory_v = [], []
    for _ in range(STEPS):
        w.grad, v.grad = grad_fn(w.detach()), grad_fn(v.detach())
        opt.step()
        trajectory_w.append(w.detach().clone())
        trajectory_v.append(v.detach().clone())
    torch.testing.assert_close(torch.stack(trajectory_w), momentum_formula([0.05] * STEPS, 0.9), **TOL)
    torch.testing.assert_close(torch.stack(trajectory_v), momentum_formula([0.02] * STEPS, 0.3), **TOL)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_closure_is_run_with_grad_and_its_loss_returned(name):
    w = nn.Parameter(W0.clone())
    opt = OPTIMIZERS[name]([w])

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((A @ w - b) ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.requires_grad  # evaluated under torch.enable_grad() although step is no_grad
    torch.testing.assert_close(loss.detach(), 0.5 * ((A @ W0 - b) ** 2).sum(), **TOL)
    assert opt.step() is None
    opt.zero_grad()
    assert w.grad is None
