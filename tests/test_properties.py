"""Property tests (hypothesis) over random network sizes, costs, penalties, reductions and batch
sizes: the hand-written gradients equal autograd's in float64, and batch gradient descent fed in
chunks takes exactly the single full-batch step."""

import functools

import lightning.pytorch as L
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp_torch import SigmoidMLP, autograd_gradients, manual_gradients
from mlp_torch.data import MLPDataModule
from mlp_torch.model.gradcheck import relative_error
from mlp_torch.optim import GradientDescent
from mlp_torch.train.module import MLPModule

sizes = st.lists(st.integers(1, 7), min_size=2, max_size=5)
costs = st.sampled_from(["quadratic", "cross_entropy"])
penalties = st.sampled_from([0.0, 1e-3, 0.05, 0.3])
reductions = st.sampled_from(["mean", "sum"])


@settings(max_examples=60, deadline=None)
@given(
    sizes=sizes,
    cost=costs,
    l1=penalties,
    l2=penalties,
    reduction=reductions,
    n=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_manual_gradients_equal_autograd_float64(sizes, cost, l1, l2, reduction, n, seed):
    net = SigmoidMLP(sizes, seed=seed, bias_init=0.01).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=gen, dtype=torch.float64)  # (n, n_in)
    if cost == "cross_entropy":
        y = torch.eye(sizes[-1], dtype=torch.float64)[torch.randint(sizes[-1], (n,), generator=gen)]
    else:
        y = torch.rand(n, sizes[-1], generator=gen, dtype=torch.float64)  # (n, n_out)
    kw = dict(cost=cost, l1=l1, l2=l2, reduction=reduction)
    manual, auto = manual_gradients(net, x, y, **kw), autograd_gradients(net, x, y, **kw)
    assert list(manual) == list(auto)
    for name in manual:
        assert relative_error(manual[name], auto[name]) <= 1e-10, (name, sizes, kw, n)


@settings(max_examples=12, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    cost=costs,
    l1=penalties,
    l2=penalties,
    reduction=reductions,
    n_samples=st.integers(8, 40),
    chunk=st.integers(1, 40),
)
def test_chunked_batch_gradient_descent_is_the_full_batch_step(
    hidden, cost, l1, l2, reduction, n_samples, chunk
):
    lr = 0.5 if reduction == "mean" else 0.02
    dm = MLPDataModule("xor", n_samples=n_samples, dtype="float64", seed=1)
    module = MLPModule(
        hidden_sizes=hidden,
        n_inputs=2,
        n_outputs=2,
        cost=cost,
        l1=l1,
        l2=l2,
        reduction=reduction,
        batch_size="full",
        chunk_size=chunk,
        dtype="float64",
        seed=1,
        histograms_every_n_epochs=0,
        optimizer=functools.partial(GradientDescent, lr=lr),
    )
    before = SigmoidMLP(module.net.sizes, seed=1).double()
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    g = manual_gradients(before, dm.x_train, dm.y_train, cost=cost, l1=l1, l2=l2, reduction=reduction)
    assert module.global_step == 1
    for name, p in module.net.named_parameters():
        expected = before.get_parameter(name).detach() - lr * g[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-13)
