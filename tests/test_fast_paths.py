"""Every fast path gives what the straightforward one gives (float64): the fused backprop against
the readable one, the optimizers on one flat tensor against one tensor per parameter, and
MLPModule's lean loop against a plain loop of readable backprop and the optimizer. No timings here:
those live in scripts/benchmark.py."""

import functools

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlp_torch import SigmoidMLP
from mlp_torch.data import MLPDataModule
from mlp_torch.model.backprop import backprop
from mlp_torch.model.fused import fused_backprop
from mlp_torch.optim import GradientDescent, HeavyBall, Momentum
from mlp_torch.train.loop import epoch_permutation
from mlp_torch.train.module import MLPModule
from mlp_torch.train.threads import SMALL_PRODUCT, available_cores, choose_num_threads
from tests.conftest import DEVICES

OPTIMIZERS = {
    "gd": functools.partial(GradientDescent, lr=0.3),
    "momentum": functools.partial(Momentum, lr=0.5, alpha=0.9),
    "heavy_ball": functools.partial(HeavyBall, lr=0.1, alpha=0.8),
    "nesterov": functools.partial(HeavyBall, lr=0.1, alpha=0.8, nesterov=True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sizes", [[3, 2], [4, 6, 3], [5, 7, 6, 2]])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("n, scale", [(1, 1.0), (5, 0.2), (5, 1.0)])
def test_fused_backprop_equals_the_readable_one(device, sizes, cost, n, scale):
    net = SigmoidMLP(sizes, seed=1).double().to(device)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, sizes[0], generator=gen, dtype=torch.float64).to(device)
    y = torch.rand(n, sizes[-1], generator=gen, dtype=torch.float64).to(device)
    weights = [W.detach() for W in net.weights]
    biases = [b.detach() for b in net.biases]
    expected = backprop(weights, biases, x, y, cost=cost, scale=scale)
    grad_W = [torch.full_like(W, float("nan")) for W in weights]  # every entry must be written
    grad_b = [torch.full_like(b, float("nan")) for b in biases]
    z_out = torch.empty(n, sizes[-1], dtype=torch.float64, device=device)
    z = fused_backprop(weights, biases, x, y, grad_W, grad_b, cost=cost, scale=scale, z_out=z_out)
    for got, want in zip([*grad_W, *grad_b], [*expected.grad_W, *expected.grad_b]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    zs, _ = net.forward_pass(x)
    assert z.data_ptr() == z_out.data_ptr()
    torch.testing.assert_close(z_out, zs[-1].detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_on_one_flat_tensor_equals_one_tensor_per_parameter(name):
    """MLPModule hands its optimizer one flat tensor of which the parameters are views; the rules
    are elementwise, so this is the update of each parameter; update() is step()."""
    shapes = [(4, 3), (2, 4), (4,), (2,)]
    gen = torch.Generator().manual_seed(0)
    separate = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    flat = torch.cat([p.reshape(-1) for p in separate])
    opt_separate, opt_flat = OPTIMIZERS[name](separate), OPTIMIZERS[name]([flat])
    for step in range(5):
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        for p, g in zip(separate, grads):
            p.grad = g
        flat.grad = torch.cat([g.reshape(-1) for g in grads])
        opt_separate.step()
        opt_flat.update() if step % 2 else opt_flat.step()
        torch.testing.assert_close(flat, torch.cat([p.reshape(-1) for p in separate]), rtol=1e-12, atol=0)


def _plain_loop(net, opt, x, y, epochs, batch_size, seed, chunk=None, **objective):
    """The straightforward loop: readable backprop, one gradient tensor per parameter, step()."""
    n = len(x)
    for epoch in range(epochs):
        order = torch.arange(n) if batch_size == "full" else epoch_permutation(n, seed, epoch)
        for i in order.split(n if batch_size == "full" else batch_size):
            weights = [W.detach() for W in net.weights]
            biases = [b.detach() for b in net.biases]
            step = chunk or len(i)
            grads = None
            for start in range(0, len(i), step):
                rows = i[start : start + step]
                pen = objective if start == 0 else {**objective, "l1": 0.0, "l2": 0.0}
                bp = backprop(weights, biases, x[rows], y[rows], scale=1 / len(i), **pen)
                g = [t for pair in zip(bp.grad_W, bp.grad_b) for t in pair]
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            for p, g in zip(net.parameters(), grads):
                p.grad = g
            opt.step()


@pytest.mark.parametrize("grad_source", ["manual", "autograd"])
@pytest.mark.parametrize(
    "batch_size, chunk, optimizer",
    [(1, None, "momentum"), (16, None, "momentum"), (16, None, "nesterov"), ("full", 40, "momentum")],
)
def test_lean_loop_gives_the_weights_of_a_plain_loop(grad_source, batch_size, chunk, optimizer):
    objective = dict(cost="cross_entropy", l1=1e-3, l2=2e-3)
    dm = MLPDataModule("iris", dtype="float64", seed=0)
    module = MLPModule(
        n_inputs=dm.n_features, n_outputs=dm.n_outputs, hidden_sizes=[6, 5], dtype="float64", seed=4,
        optimizer=OPTIMIZERS[optimizer], batch_size=batch_size, chunk_size=chunk,
        grad_source=grad_source, histograms_every_n_epochs=0, **objective,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    net = SigmoidMLP([dm.n_features, 6, 5, dm.n_outputs], seed=4).double()
    _plain_loop(net, OPTIMIZERS[optimizer](net.parameters()), dm.x_train, dm.y_train, 3, batch_size, 4,
                chunk, **objective)  # fmt: skip
    for (name, got), want in zip(module.net.named_parameters(), net.parameters()):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-13, msg=name)
    # the parameters are still views of the one tensor the optimizer updates
    assert all(p.untyped_storage().data_ptr() == module.flat.untyped_storage().data_ptr()
               for p in module.net.parameters())  # fmt: skip


def test_flat_parameters_survive_moving_and_loading():
    module = MLPModule(hidden_sizes=[5], n_inputs=4, n_outputs=3, dtype="float64")
    module._flatten_parameters()
    flat = module.flat
    module.to(torch.float32)  # views broken: the next flatten rebuilds them, same values, same tensor
    module._flatten_parameters()
    assert module.flat is flat and flat.dtype == torch.float32
    other = MLPModule(hidden_sizes=[5], n_inputs=4, n_outputs=3, seed=9)
    module.load_state_dict(other.state_dict())  # copies into the views
    torch.testing.assert_close(module.flat[:20].view(5, 4), other.net.layers[0].weight.detach())


def test_histograms_every_n_epochs(tmp_path):
    dm = MLPDataModule("iris", seed=0)
    module = MLPModule(n_inputs=dm.n_features, n_outputs=dm.n_outputs, hidden_sizes=[4],
                       histograms_every_n_epochs=2)  # fmt: skip
    trainer = L.Trainer(
        max_epochs=5, logger=TensorBoardLogger(tmp_path, name="", version=""), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    for tag in ("weights/layers.0.weight", "grads/layers.1.bias"):
        assert [e.step for e in events.Histograms(tag)] == [0, 2, 4]


def test_histogram_counts_every_value_between_min_and_max(tmp_path):
    from mlp_torch.train.events import RunEvents

    written = []

    class Recorder(RunEvents):
        def summary(self, summary, step):
            (value,) = summary.value
            written.append((value.tag, value.histo, step))

    events = Recorder(tmp_path)
    t = torch.tensor([[-2.0, 0.5, 0.5], [1.0, 3.0, 0.0]])
    events.histogram("w", t, 7, bins=5)
    tag, h, step = written.pop()
    assert (tag, h.min, h.max, h.num, h.sum, h.sum_squares, step) == ("w", -2.0, 3.0, 6, 3.0, 14.5, 7)
    assert list(h.bucket_limit) == [-1.0, 0.0, 1.0, 2.0, 3.0]  # each bin's right edge
    assert list(h.bucket) == [1, 0, 3, 1, 1]  # [-2,-1) [-1,0) [0,1) [1,2) [2,3]
    events.histogram("zeros", torch.zeros(4), 0)  # one value: one bin around it
    assert list(written.pop()[1].bucket) == [4]
    events.histogram("nan", torch.tensor([1.0, float("nan")]), 0)
    events.histogram("inf", torch.tensor([1.0, float("inf")]), 0)
    assert written == []  # TensorBoard rejects inf and NaN: nothing written


def test_threads_by_the_size_of_an_update():
    assert choose_num_threads([64, 100, 10], 16) == 1  # the default network: 102,400 multiply-adds
    assert choose_num_threads([64, 100, 10], 16, cores=2, members=32) == 1  # a sweep: 3.3M, still small
    assert choose_num_threads([64, 100, 10], 16, cores=2, members=1000) == 2
    assert choose_num_threads([784, 1024, 1024, 10], 512, cores=8) == 8
    assert choose_num_threads([16, SMALL_PRODUCT // 16], 1, cores=3) == 3
    assert choose_num_threads([16, SMALL_PRODUCT // 16 - 1], 1, cores=3) == 1
    assert 1 <= available_cores()


def test_threads_option_and_rule_are_applied(monkeypatch):
    dm = MLPDataModule("iris", seed=0)
    before = torch.get_num_threads()
    try:
        for threads, expected in ((2, 2), (None, 1)):
            module = MLPModule(n_inputs=dm.n_features, n_outputs=dm.n_outputs, hidden_sizes=[4],
                               num_threads=threads, histograms_every_n_epochs=0)  # fmt: skip
            L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False).fit(module, datamodule=dm)  # fmt: skip
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads=0 must be an integer >= 1"):
        MLPModule(num_threads=0)
