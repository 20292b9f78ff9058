"""The compiled epoch loop (mlp_torch/train/native.py) against the readable equations
(mlp_torch/model/backprop.py) and the optimizers' own step(), for every combination it covers:
depths 1-3, both costs, L1 and L2, both reductions, batch 1, mini-batches and the full batch,
GradientDescent, Momentum, HeavyBall and Nesterov, float32 and float64, K >= 1 members.

Tolerance: float64 weights after 3 epochs within 1e-12 relative. The loop may reassociate the
sums over a layer's inputs and sums a batch in another order than PyTorch, which moves each
weight by a few units in the last place per update (1e-16 relative); the networks and rates here
keep that from growing, and 1e-12 leaves four orders of magnitude for it while any error in an
equation (a term, a factor, an index) shows at 1e-3 or more. float32: torch's assert_close."""

import functools
import itertools
import logging

import numpy as np
import pytest
import torch

from mlp_torch.model.backprop import backprop, objective_terms
from mlp_torch.model.costs import COSTS
from mlp_torch.model.network import SigmoidMLP
from mlp_torch.model.optim import GradientDescent, HeavyBall, Momentum
from mlp_torch.train import native

pytestmark = pytest.mark.skipif(not native.available(), reason=native.why_unavailable() or "numba")

OPTIMIZERS = {
    "GradientDescent": functools.partial(GradientDescent, lr=0.7),
    "Momentum": functools.partial(Momentum, lr=0.7, alpha=0.9),
    "HeavyBall": functools.partial(HeavyBall, lr=0.2, alpha=0.8),
    "Nesterov": functools.partial(HeavyBall, lr=0.2, alpha=0.8, nesterov=True),
}
SETTINGS = {name: dict(f.keywords) for name, f in OPTIMIZERS.items()}
REGIMES = {"stochastic": 1, "mini-batch": 5, "BLAS mini-batch": native.BLAS_ROWS + 3, "full": None}
# each case takes the next of these: every depth, cost, penalty and reduction is met, in several combinations
DEPTHS = [[3, 2], [3, 5, 2], [3, 4, 5, 2]]
PENALTIES = [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-3), (1e-3, 2e-3)]
VARIANTS = list(itertools.product(DEPTHS, ["quadratic", "cross_entropy"], PENALTIES, ["mean", "sum"]))
N = 23  # examples: the last mini-batch is shorter


def problem(sizes, cost, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(N, sizes[0], generator=gen, dtype=torch.float64).to(dtype)
    if cost == "cross_entropy":
        y = torch.eye(sizes[-1], dtype=dtype)[torch.randint(sizes[-1], (N,), generator=gen)]
    else:
        y = torch.rand(N, sizes[-1], generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def readable(net, x, y, batch, epochs, cost, l1, l2, reduction, optimizer, costs=None):
    """The notes' loop, as written: backprop.backprop of each batch, the optimizer's step()
    (``optimizer``: a name of OPTIMIZERS, or a factory ``params -> Optimizer``); each update's
    cost sum (unscaled) is appended to ``costs`` if given."""
    weights = [W.detach().clone() for W in net.weights]
    biases = [b.detach().clone() for b in net.biases]
    opt = (OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer)([*weights, *biases])
    for _ in range(epochs):
        for start in range(0, N, batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            if costs is not None:
                costs.append(float(objective_terms(weights, biases, xb, yb, cost=cost)["cost"]))
            scale = 1.0 / len(xb) if reduction == "mean" else 1.0
            bp = backprop(weights, biases, xb, yb, cost=cost, l1=l1, l2=l2, scale=scale)
            for p, g in zip([*weights, *biases], bp.grad_W + bp.grad_b):
                p.grad = g
            opt.step()
    return torch.cat([p.reshape(-1) for p in [*weights, *biases]])


def compiled(net, x, y, batch, epochs, cost, l1, l2, reduction, optimizer, members=1,
             blas_block=native.BLAS_BLOCK):  # fmt: skip
    """The same epochs by native.epoch, on flat (K, P) tensors as the module holds them; returns
    the parameters and each epoch's costs ``(epochs, K, U)`` and penalties' sums ``(epochs, 2, K, U)``."""
    flat = torch.cat([p.detach().reshape(-1) for p in [*net.weights, *net.biases]]).repeat(members, 1)
    grad, state = torch.zeros_like(flat), torch.zeros_like(flat)
    starts = [*range(0, N, batch), N]
    scales = [1.0 / (b - a) if reduction == "mean" else 1.0 for a, b in zip(starts, starts[1:])]
    costs = torch.zeros(epochs, members, len(scales), dtype=x.dtype)
    sums = torch.zeros(epochs, 2, members, len(scales), dtype=x.dtype)
    settings = SETTINGS[optimizer]
    for e in range(epochs):
        native.epoch(
            flat.numpy(), grad.numpy(), None if optimizer == "GradientDescent" else state.numpy(),
            x[None].numpy(), y[None].numpy(), costs[e].numpy(), sums[e].numpy(), net.sizes, starts, scales,
            cost=cost, rule=native.RULES[optimizer], l1=[l1] * members, l2=[l2] * members,
            lr=[settings["lr"]] * members, alpha=[settings.get("alpha", 0.0)] * members,
            active=[True] * members, blas_block=blas_block,
        )  # fmt: skip
    return flat, costs, sums


CASES = list(itertools.product(OPTIMIZERS, REGIMES, [torch.float64, torch.float32]))


@pytest.mark.parametrize(
    "optimizer, regime, dtype", CASES, ids=[f"{o}-{r}-{str(d)[6:]}" for o, r, d in CASES]
)
def test_the_compiled_epochs_are_the_readable_equations(optimizer, regime, dtype):
    case = CASES.index((optimizer, regime, dtype))
    sizes, cost, (l1, l2), reduction = VARIANTS[(7 * case) % len(VARIANTS)]
    batch = REGIMES[regime] or N
    net = SigmoidMLP(sizes, seed=case, bias_init=0.01).to(dtype)
    x, y = problem(sizes, cost, dtype, seed=case)
    costs = []  # each update's cost sum at the weights it used: what train/J is made of
    want = readable(net, x, y, batch, 3, cost, l1, l2, reduction, optimizer, costs)
    want_costs = torch.tensor(costs, dtype=torch.float64)
    # the full batch also in BLAS blocks of 9 examples (its gradient summed over the blocks)
    for blas_block in [native.BLAS_BLOCK] + ([9] if regime == "full" else []):
        got, got_costs, sums = compiled(
            net, x, y, batch, 3, cost, l1, l2, reduction, optimizer, blas_block=blas_block
        )
        got_costs = got_costs[:, 0].reshape(-1).double()  # (3 U,): the updates in order
        if dtype == torch.float64:
            assert float((got[0] - want).abs().max() / want.abs().max()) <= 1e-12
            assert float(((got_costs - want_costs) / want_costs).abs().max()) <= 1e-12
        else:
            torch.testing.assert_close(got[0], want)
            torch.testing.assert_close(got_costs, want_costs, rtol=1e-5, atol=1e-6)
    # the penalties' sums at each update's weights (the first update's: the starting weights)
    if l1 or l2:
        W = torch.cat([w.detach().reshape(-1) for w in net.weights])
        torch.testing.assert_close(sums[0, :, 0, 0], torch.stack([W.abs().sum(), (W * W).sum()]))


def test_each_member_is_trained_as_it_would_be_alone():
    """Three members: their own settings (rates, momenta, penalties), their own data, one call."""
    sizes, dtype = [3, 6, 2], torch.float64
    nets = [SigmoidMLP(sizes, seed=k).to(dtype) for k in range(3)]
    data = [problem(sizes, "cross_entropy", dtype, seed=10 + k) for k in range(3)]
    lrs, alphas, l1s, l2s = [0.3, 0.7, 1.1], [0.0, 0.5, 0.9], [0.0, 1e-3, 0.0], [1e-3, 0.0, 0.0]
    flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in [*n.weights, *n.biases]]) for n in nets])
    grad, state = torch.zeros_like(flat), torch.zeros_like(flat)
    x, y = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    starts = [*range(0, N, 4), N]
    scales = [1.0 / (b - a) for a, b in zip(starts, starts[1:])]
    costs, sums = torch.zeros(3, len(scales), dtype=dtype), torch.zeros(2, 3, len(scales), dtype=dtype)
    for _ in range(3):
        native.epoch(flat.numpy(), grad.numpy(), state.numpy(), x.numpy(), y.numpy(), costs.numpy(),
                     sums.numpy(), sizes, starts, scales, cost="cross_entropy", rule=native.RULES["Momentum"],
                     l1=l1s, l2=l2s,
                     lr=lrs, alpha=alphas, active=[True, False, True])  # fmt: skip
    for k in range(3):
        start = torch.cat([p.detach().reshape(-1) for p in [*nets[k].weights, *nets[k].biases]])
        if k == 1:  # not active: left as it was, its costs too
            assert torch.equal(flat[k], start) and not costs[k].any()
            continue
        own, own_costs = functools.partial(Momentum, lr=lrs[k], alpha=alphas[k]), []
        want = readable(nets[k], *data[k], 4, 3, "cross_entropy", l1s[k], l2s[k], "mean", own, own_costs)
        assert float((flat[k] - want).abs().max() / want.abs().max()) <= 1e-12
        last = torch.tensor(own_costs[-len(scales) :], dtype=dtype)  # the last epoch's
        assert float(((costs[k] - last) / last).abs().max()) <= 1e-12


@pytest.mark.parametrize("batch", [1, native.BLAS_ROWS + 1])
def test_members_shared_among_threads_are_trained_bit_for_bit_as_one_after_another(batch):
    """workers > 1: the active members in groups, each group's epoch on a thread of its own; every
    number of every member (parameters, gradient, state, costs, penalties' sums) is the one the
    members trained one after another get, bit for bit, an inactive member left as it was."""
    sizes, dtype, K = [3, 9, 2], torch.float32, 5
    nets = [SigmoidMLP(sizes, seed=k).to(dtype) for k in range(K)]
    data = [problem(sizes, "cross_entropy", dtype, seed=20 + k) for k in range(K)]
    start = torch.stack([torch.cat([p.detach().reshape(-1) for p in [*n.weights, *n.biases]]) for n in nets])
    x, y = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    starts = [*range(0, N, batch), N]
    scales = [1.0 / (b - a) for a, b in zip(starts, starts[1:])]
    active = [True, True, False, True, True]
    runs = {}
    for workers in (1, 2, 3):
        flat, grad, state = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
        costs, sums = torch.zeros(K, len(scales), dtype=dtype), torch.zeros(2, K, len(scales), dtype=dtype)
        for _ in range(3):
            native.epoch(flat.numpy(), grad.numpy(), state.numpy(), x.numpy(), y.numpy(), costs.numpy(),
                         sums.numpy(), sizes, starts, scales, cost="cross_entropy",
                         rule=native.RULES["Momentum"], l1=[1e-3] * K, l2=[0.0, 1e-3, 0.0, 2e-3, 1e-4],
                         lr=[0.3, 0.5, 0.7, 0.9, 1.1],
                         alpha=[0.9] * K, active=active, workers=workers)  # fmt: skip
        runs[workers] = flat, grad, state, costs, sums
    assert torch.equal(runs[1][0][2], start[2]) and not runs[1][3][2].any()
    assert not torch.equal(runs[1][0][0], start[0])
    for workers in (2, 3):
        for got, want in zip(runs[workers], runs[1]):
            assert torch.equal(got, want)


@pytest.mark.parametrize("n", [5, N])  # the loops' products, BLAS's
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_evaluate_is_the_forward_pass_cost_and_accuracy(n, dtype):
    """native.evaluate (a fit's validation where the native loop trains): each member's J (its cost,
    mean or summed, plus the penalties) and accuracy, as the readable forward pass and cost give
    them, for members with their own data or sharing it, on one thread or several."""
    from mlp_torch.model.backprop import output_terms
    from mlp_torch.model.network import feedforward

    sizes, K = [3, 7, 5, 4], 3
    nets = [SigmoidMLP(sizes, seed=k).to(dtype) for k in range(K)]
    flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in [*m.weights, *m.biases]]) for m in nets])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(K, n, sizes[0], generator=g, dtype=dtype)
    y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (K, n), generator=g), sizes[-1]).to(dtype)
    l1, l2 = [0.0, 1e-3, 2e-3], [1e-3, 0.0, 5e-4]
    for cost, reduction, shared, workers in itertools.product(
        ["quadratic", "cross_entropy"], ["mean", "sum"], [False, True], [1, 2]
    ):
        xs, ys = (x[0], y[0]) if shared else (x, y)
        got = native.evaluate(flat.numpy(), xs.numpy(), ys.numpy(), sizes, cost=cost, l1=l1, l2=l2,
                              mean=reduction == "mean", workers=workers)  # fmt: skip
        for k, m in enumerate(nets):
            xk, yk = (x[0], y[0]) if shared else (x[k], y[k])
            with torch.no_grad():
                zs, acts = feedforward(m.weights, m.biases, xk)
                s = 1.0 / n if reduction == "mean" else 1.0
                J = output_terms(m.weights, zs[-1], acts[-1], yk, cost=cost, l1=l1[k], l2=l2[k], scale=s)["J"]
            right = float((acts[-1].argmax(-1) == yk.argmax(-1)).double().mean())
            case = (cost, reduction, shared, workers, k)
            assert got[k, 0] == pytest.approx(float(J), rel=1e-12 if dtype == torch.float64 else 1e-5), case
            assert got[k, 1] == right, case
        for active in ([True, False, True], [False, True, False], [False] * K):  # stopped members: NaN
            some = native.evaluate(flat.numpy(), xs.numpy(), ys.numpy(), sizes, cost=cost, l1=l1, l2=l2,
                                   mean=reduction == "mean", active=active, workers=workers)  # fmt: skip
            for k, on in enumerate(active):
                assert (some[k] == got[k]).all() if on else np.isnan(some[k]).all(), (case, active)


def test_a_nan_stays_a_nan():
    """fastmath here never assumes finite values: a weight gone NaN makes z_L NaN (J non-finite:
    the divergence is caught), and the sigmoid of +-inf is 1 or 0."""
    sizes, dtype = [3, 4, 2], torch.float64
    net = SigmoidMLP(sizes, seed=0).to(dtype)
    with torch.no_grad():
        net.weights[0][0, 0] = float("nan")
    x, y = problem(sizes, "quadratic", dtype, seed=0)
    for cost in COSTS:
        _, costs, _ = compiled(net, x, y, 1, 1, cost, 0.0, 0.0, "mean", "GradientDescent")
        assert costs.isnan().all()


def test_equal_hidden_units_are_found():
    """_units_distinct: two units are equal when their weights in, bias and weights out are."""
    net = SigmoidMLP([4, 6, 5, 3], seed=0).to(torch.float64)
    sizes = np.asarray(net.sizes)
    w_at = np.cumsum([0] + [a * b for a, b in zip(sizes, sizes[1:])])[:-1]
    b_at = w_at[-1] + sizes[-2] * sizes[-1] + np.cumsum([0, *sizes[1:-1]])
    shapes = np.stack([sizes[1:], sizes[:-1]], 1)

    def distinct(weights, biases):
        flat = torch.cat([p.reshape(-1) for p in [*weights, *biases]]).numpy()
        return native._units_distinct(flat, w_at, b_at, shapes)

    W, b = [w.detach().clone() for w in net.weights], [v.detach().clone() for v in net.biases]
    assert distinct(W, b)
    W[1][4] = W[1][1]  # units 1 and 4 of the second hidden layer: the same weights in ...
    b[1][4] = b[1][1]  # ... and bias,
    assert distinct(W, b)
    W[2][:, 4] = W[2][:, 1]  # and out: equal
    assert not distinct(W, b)
    W[2][0, 4] += 2.0**-40  # one weight out differs in its last bits: not equal
    assert distinct(W, b)
    assert not distinct([torch.zeros_like(w) for w in W], b)  # zero init: all equal


# ---- the module: which loop trains, and the two give the same run -----------------------------


def fit(module, dm, epochs=3):
    import lightning.pytorch as L

    quiet = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer = L.Trainer(max_epochs=epochs, num_sanity_val_steps=0, **quiet)
    trainer.fit(module, datamodule=dm)
    return module


@pytest.mark.parametrize("batch", [5, native.BLAS_ROWS + 3, N])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_init_keeps_the_hidden_units_identical_in_the_native_loop(dtype, batch):
    """The notes' symmetry: from equal weights every hidden unit gets the same gradient, so they stay
    equal, bit for bit, whatever the width's remainder after SIMD lanes (100 = 6 x 16 + 4 in
    float32 on AVX-512): the loops over a layer's units never reorder a unit's own arithmetic.
    BLAS's products may (OpenBLAS's edge kernels do): a member with equal units never uses them."""
    net = SigmoidMLP([13, 100, 7, 3], init="zeros", bias_init=0.01).to(dtype)
    net.weights[-1].data.normal_(generator=torch.Generator().manual_seed(0))  # the outputs differ
    x, y = problem(net.sizes, "quadratic", dtype, seed=1)
    flat, _, _ = compiled(net, x, y, batch, 20, "quadratic", 1e-4, 1e-4, "mean", "Momentum")
    W1, W2 = flat[0, : 100 * 13].reshape(100, 13), flat[0, 1300 : 1300 + 700].reshape(7, 100)
    assert float(W1.abs().max()) > 1e-6  # moved from zero
    assert torch.equal(W1, W1[:1].expand_as(W1)) and torch.equal(W2, W2[:, :1].expand_as(W2))


@pytest.mark.parametrize("batch_size", [1, 7, "full"])
def test_the_module_trains_the_same_run_natively_and_in_torch(batch_size, caplog):
    from mlp_torch.data import MLPDataModule
    from mlp_torch.train.module import MLPModule

    runs, records = {}, {}
    for on in (True, False):
        dm = MLPDataModule("iris", dtype="float64")
        module = MLPModule(n_inputs=4, n_outputs=3, hidden_sizes=[6], dtype="float64", batch_size=batch_size,
                           l1=1e-4, native=on)  # fmt: skip
        with caplog.at_level(logging.INFO):
            fit(module, dm)
        runs[on] = module.flat.clone(), module.epoch_stats["J"][0], module.trainer.callback_metrics["train/J"]
        records[on] = dict(module.epoch_log[0])  # the last epoch's figures: train/*, sparsity/*
        assert ("native: on" if on else "native: off (--model.native false)") in caplog.text
        caplog.clear()
    (native_flat, native_J, logged), (torch_flat, torch_J, _) = runs[True], runs[False]
    assert float((native_flat - torch_flat).abs().max() / torch_flat.abs().max()) <= 1e-12
    assert native_J == pytest.approx(torch_J, rel=1e-12) and float(logged) == pytest.approx(
        native_J, rel=1e-6
    )  # train/J of the last epoch
    assert records[True].keys() == records[False].keys()
    assert {"sparsity/layer_0", "val/J", "val/acc"} <= records[True].keys()  # val/*: native.evaluate
    for name, value in records[False].items():  # the compiled figures and the torch loop's
        assert records[True][name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize(
    "settings, why",
    [
        ({"grad_source": "autograd"}, "grad_source autograd"),
        ({"crosscheck_every_n_steps": 5}, "the cross-check runs in the torch loop"),
        (
            {"optimizer": functools.partial(torch.optim.SGD, lr=0.5)},
            "SGD is not an optimizer of mlp_torch.optim",
        ),
        ({"hidden_sizes": [1000]}, "is one for threads"),  # full batch: 1,078 x 64 x 1,000 > 2^26
    ],
)
def test_the_torch_loop_trains_what_the_native_one_does_not_cover(settings, why, caplog):
    from mlp_torch.data import MLPDataModule
    from mlp_torch.train.module import MLPModule

    dm = MLPDataModule("digits")
    module = MLPModule(**{"hidden_sizes": [6], "batch_size": "full", **settings})
    with caplog.at_level(logging.INFO):
        fit(module, dm, epochs=2)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("native:")]
    assert line.startswith("native: off (") and why in line, line


def test_the_native_loop_trains_where_one_thread_does():
    """Its line is the threads' rule's: above it the torch loop's products get every core."""
    from mlp_torch.train.threads import SMALL_PRODUCT

    assert native.NATIVE_PRODUCT == SMALL_PRODUCT


def test_views_with_gaps_are_read_and_written_as_contiguous_arrays():
    """A sweep's chunk of a streamed epoch hands over views with gaps (``costs[:, lo:hi]``): the
    same epoch as on contiguous arrays, written into the views and nowhere else."""
    sizes, dtype, K, batch = [3, 6, 2], torch.float64, 2, native.BLAS_ROWS + 1
    net = SigmoidMLP(sizes, seed=3).to(dtype)
    x, y = problem(sizes, "cross_entropy", dtype, seed=3)
    flat, costs, sums = compiled(
        net, x, y, batch, 1, "cross_entropy", 1e-3, 1e-3, "mean", "Momentum", members=K
    )
    starts = [*range(0, N, batch), N]
    U = len(starts) - 1
    flat2 = torch.cat([p.detach().reshape(-1) for p in [*net.weights, *net.biases]]).repeat(K, 1)
    costs_big, sums_big = (
        torch.full((K, U + 2), 7.0, dtype=dtype),
        torch.full((2, K, U + 2), 7.0, dtype=dtype),
    )
    costs_view, sums_view = costs_big[:, 1 : 1 + U].numpy(), sums_big[..., 1 : 1 + U].numpy()
    x_view = (
        torch.stack([x, torch.full_like(x, 7.0)], 1).reshape(2 * N, -1)[None, ::2].numpy()
    )  # every other row
    assert not any(a.flags.c_contiguous for a in (costs_view, sums_view, x_view))
    grad, state = torch.zeros_like(flat2), torch.zeros_like(flat2)
    scales = [1.0 / (b - a) for a, b in zip(starts, starts[1:])]
    native.epoch(
        flat2.numpy(), grad.numpy(), state.numpy(), x_view, y[None].numpy(), costs_view, sums_view,
        sizes, starts, scales, cost="cross_entropy", rule=native.RULES["Momentum"], l1=[1e-3] * K,
        l2=[1e-3] * K, lr=[0.7] * K, alpha=[0.9] * K, active=[True] * K,
    )  # fmt: skip
    assert torch.equal(flat2, flat) and torch.equal(costs_big[:, 1 : 1 + U], costs[0])
    assert torch.equal(sums_big[..., 1 : 1 + U], sums[0])
    assert (costs_big[:, [0, -1]] == 7).all() and (sums_big[..., [0, -1]] == 7).all()


@pytest.mark.parametrize("batch", [1, native.BLAS_ROWS + 1])
def test_rows_in_use_order_are_read_where_they_are(batch):
    """``order``: the loop reads each update's rows of the stored split itself; the same epoch as
    on the rows gathered beforehand, for one order shared by all members and for each member's
    own, on data shared by all members and on each member's own."""
    sizes, dtype, K = [3, 6, 2], torch.float64, 2
    net = SigmoidMLP(sizes, seed=4).to(dtype)
    data = [problem(sizes, "cross_entropy", dtype, seed=20 + k) for k in range(K)]
    x, y = torch.stack([d[0] for d in data]).numpy(), torch.stack([d[1] for d in data]).numpy()  # (K, N, ...)
    orders = np.stack([np.random.default_rng(k).permutation(N) for k in range(K)])  # (K, N)
    starts = [*range(0, N, batch), N]
    scales = [1.0 / (b - a) for a, b in zip(starts, starts[1:])]

    def run(x, y, order):
        flat = torch.cat([p.detach().reshape(-1) for p in [*net.weights, *net.biases]]).repeat(K, 1).numpy()
        grad, state = np.zeros_like(flat), np.zeros_like(flat)
        costs, sums = np.zeros((K, len(scales))), np.zeros((2, K, len(scales)))
        native.epoch(flat, grad, state, x, y, costs, sums, sizes, starts, scales, cost="cross_entropy",
                     rule=native.RULES["Momentum"], l1=[1e-3] * K, l2=[1e-3] * K, lr=[0.7] * K,
                     alpha=[0.9] * K, active=[True] * K, order=order)  # fmt: skip
        return flat, costs, sums

    cases = [  # (x, y, order) and the same rows gathered beforehand
        ((x[0], y[0], orders[0]), (x[0][orders[0]], y[0][orders[0]])),  # shared data, one order
        ((x[0], y[0], orders), (x[0][orders], y[0][orders])),  # shared data, each member's order
        ((x, y, orders[0]), (x[:, orders[0]], y[:, orders[0]])),  # own data, one order
        (
            (x, y, orders),
            (np.stack([x[k][orders[k]] for k in range(K)]), np.stack([y[k][orders[k]] for k in range(K)])),
        ),  # fmt: skip
    ]
    for (xs, ys, order), gathered in cases:
        for got, want in zip(run(xs, ys, order), run(*gathered, None)):
            assert np.array_equal(got, want)


def test_figures_find_the_first_non_finite_update_and_the_small_weights():
    """native.figures: J and its terms as loop.epoch_objective's, each member's first update whose
    J is inf or NaN, each layer's fraction of weights below the line."""
    from mlp_torch.train import loop

    costs = np.array([[2.0, 4.0, 6.0], [1.0, np.nan, np.inf]])  # (K, U)
    sums = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]])  # (2, K, U)
    counts, l1, l2 = np.array([4, 4, 2]), [0.1, 0.0], [0.01, 0.5]
    flat = np.array(
        [[0.0, 0.5, -1e-4, 2.0, 0.0, 0.1, 1.0], [1.0] * 7]
    )  # sizes [1, 2, 1]: 2 + 2 weights, 3 biases
    got = native.figures(costs, sums, counts, l1, l2, flat, [1, 2, 1], mean=True, near_zero=1e-3)
    first = [torch.tensor(np.asarray(a, float)) for a in (costs[:1], counts, sums[:, :1], l1[:1], l2[:1])]
    want, _ = loop.epoch_objective(*first[:3], reduction="mean", l1=first[3], l2=first[4])
    np.testing.assert_allclose(got[0, :4], [float(want[k][0]) for k in ("J", "cost", "l1", "l2")], rtol=1e-15)
    assert got[0, 4] == -1 and got[1, 4] == 1  # the second member's J went NaN at update 1
    np.testing.assert_array_equal(got[:, 5:], [[0.5, 0.5], [0.0, 0.0]])
