"""Real tiny trainings with Lightning: the notes' three regimes, both gradient sources, resuming,
cross-checking and the learning-rate diagnostics."""

import functools
import logging

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mlp_torch import SigmoidMLP, manual_gradients
from mlp_torch.data import MLPDataModule
from mlp_torch.optim import GradientDescent, Momentum
from mlp_torch.train.callbacks import ConvergenceStop, LearningRateDiagnostics, NonFiniteObjectiveError
from mlp_torch.train.loop import epoch_permutation
from mlp_torch.train.module import CrossCheckError, MLPModule
from tests.conftest import DEVICES


def make(dataset="iris", dtype="float64", optimizer=None, **kw):
    dm = MLPDataModule(dataset, dtype=dtype, seed=0)
    module = MLPModule(
        n_inputs=dm.n_features,
        n_outputs=dm.n_outputs,
        task=dm.task,
        target_low=dm.target_low,
        target_high=dm.target_high,
        dtype=dtype,
        optimizer=optimizer or functools.partial(GradientDescent, lr=0.5),
        histograms_every_n_epochs=0,
        **{"hidden_sizes": [6], **kw},
    )
    return dm, module


def fit(dm, module, epochs, callbacks=(), accelerator="cpu", **kw):
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        callbacks=list(callbacks),
        **kw,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def params(module):
    return {n: p.detach().cpu().clone() for n, p in module.net.named_parameters()}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batch_gradient_descent_in_chunks_equals_one_full_batch_step(reduction):
    lr = 0.5 if reduction == "mean" else 0.005
    opt = functools.partial(GradientDescent, lr=lr)
    kw = dict(batch_size="full", l1=0.01, l2=0.02, reduction=reduction, optimizer=opt)
    dm, whole = make(**kw)
    _, chunked = make(**kw, chunk_size=7)
    before = SigmoidMLP(whole.net.sizes, seed=0).double()
    fit(dm, whole, epochs=1)
    fit(dm, chunked, epochs=1)
    # the step by hand: w <- w - lr dJ/dw over all N training examples
    g = manual_gradients(
        before, dm.x_train, dm.y_train, cost="cross_entropy", l1=0.01, l2=0.02, reduction=reduction
    )
    for name, p in before.named_parameters():
        expected = p.detach() - lr * g[name]
        torch.testing.assert_close(params(whole)[name], expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(params(chunked)[name], expected, rtol=1e-12, atol=1e-14)
    assert whole.global_step == chunked.global_step == 1  # one update per epoch


def test_stochastic_gradient_descent_equals_a_plain_loop():
    lr, l2, epochs = 0.3, 1e-3, 2
    dm, module = make(batch_size=1, optimizer=functools.partial(GradientDescent, lr=lr), l2=l2, seed=3)
    net = SigmoidMLP(module.net.sizes, seed=3).double()
    fit(dm, module, epochs=epochs)
    x, y = dm.x_train, dm.y_train
    for epoch in range(epochs):
        for i in epoch_permutation(len(x), 3, epoch).tolist():  # one update per example
            g = manual_gradients(net, x[i : i + 1], y[i : i + 1], cost="cross_entropy", l2=l2)
            with torch.no_grad():
                for name, p in net.named_parameters():
                    p -= lr * g[name]
    assert module.global_step == epochs * len(x)
    for name, p in net.named_parameters():
        torch.testing.assert_close(params(module)[name], p.detach(), rtol=1e-12, atol=1e-13)


def test_mini_batches_count_and_reshuffle():
    dm, module = make(batch_size=32)
    fit(dm, module, epochs=2)
    n = len(dm.x_train)
    assert module.global_step == 2 * -(-n // 32)
    assert not torch.equal(epoch_permutation(n, 0, 0), epoch_permutation(n, 0, 1))


class _WhereTrained(L.Callback):
    """The devices of the network's parameters during training."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.devices = {p.device.type for p in pl_module.net.parameters()}


@pytest.mark.parametrize("device", DEVICES)
def test_manual_and_autograd_give_the_same_weights(device):
    opt = functools.partial(Momentum, lr=0.5, alpha=0.9)
    dm, manual = make(batch_size=16, optimizer=opt, l2=0.001, grad_source="manual")
    dm2, auto = make(batch_size=16, optimizer=opt, l2=0.001, grad_source="autograd")
    where = _WhereTrained()
    fit(dm, manual, epochs=4, accelerator=device, callbacks=[where])
    fit(dm2, auto, epochs=4, accelerator=device)
    for name, p in params(manual).items():
        torch.testing.assert_close(p, params(auto)[name], rtol=1e-12, atol=1e-13)
    assert where.devices == {device}  # Lightning moves the module back to the CPU after fit


def test_crosscheck_logs_relative_error_and_catches_a_wrong_gradient(monkeypatch):
    dm, module = make(batch_size=16, crosscheck_every_n_steps=2)
    trainer = fit(dm, module, epochs=2)
    err = trainer.callback_metrics["gradcheck/max_rel_err"].item()
    assert 0 <= err < 1e-12

    from mlp_torch.model.costs import CrossEntropyCost

    monkeypatch.setattr(CrossEntropyCost, "delta", staticmethod(lambda z, a, y: 2 * (a - y)))
    dm, module = make(batch_size=16, crosscheck_every_n_steps=3, crosscheck_action="error")
    with pytest.raises(CrossCheckError, match=r"parameter layers\.\d\.(weight|bias) has relative error"):
        fit(dm, module, epochs=1)
    dm, module = make(batch_size=16, crosscheck_every_n_steps=3)
    with pytest.warns(RuntimeWarning, match="hand-written and autograd gradients disagree"):
        fit(dm, module, epochs=1)


def test_resume_from_last_checkpoint_is_exact(tmp_path):
    opt = functools.partial(Momentum, lr=0.5, alpha=0.9)

    def trainer(epochs, folder):
        ckpt = ModelCheckpoint(dirpath=folder, save_last=True)
        return L.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[ckpt, ConvergenceStop(enabled=False)],
        )

    dm, straight = make(batch_size=8, optimizer=opt, dtype="float32")
    trainer(6, tmp_path / "a").fit(straight, datamodule=dm)
    dm, first = make(batch_size=8, optimizer=opt, dtype="float32")
    trainer(3, tmp_path / "b").fit(first, datamodule=dm)
    dm, resumed = make(batch_size=8, optimizer=opt, dtype="float32")
    trainer(6, tmp_path / "b").fit(resumed, datamodule=dm, ckpt_path=tmp_path / "b" / "last.ckpt")
    assert resumed.global_step == straight.global_step
    for name, p in params(straight).items():
        assert torch.equal(p, params(resumed)[name]), name


def test_learning_rate_far_too_large_warns_then_stops():
    """J0 is finite; one huge step makes J1 enormous (a rise: warning); the next overflows."""
    opt = functools.partial(GradientDescent, lr=1e15)
    dm, module = make(batch_size="full", optimizer=opt, l2=1.0, dtype="float32")
    diagnostics = LearningRateDiagnostics()
    with pytest.raises(NonFiniteObjectiveError) as err:
        fit(dm, module, epochs=10, callbacks=[diagnostics])
    rises = diagnostics.increases
    assert rises and "with learning rate 1e+15; the learning rate may be too large" in rises[0]
    assert "epoch 1: training J rose from" in rises[0]
    msg = str(err.value)
    assert "training J became non-finite at update" in msg and "learning rate 1e+15" in msg


def test_learning_rate_diagnostics_quiet_when_j_falls():
    dm, module = make(batch_size="full", optimizer=functools.partial(GradientDescent, lr=0.5))
    diagnostics = LearningRateDiagnostics()
    fit(dm, module, epochs=5, callbacks=[diagnostics])
    assert diagnostics.previous_J is not None and diagnostics.increases == []


def test_learning_rate_diagnostics_print_the_first_rises_and_count_all(caplog):
    """Mini-batch J wobbles: the console gets the first `max_printed` rises and one line saying
    the rest are only counted; `increases` and `largest_rise` keep them all."""
    dm, module = make(batch_size=1, optimizer=functools.partial(GradientDescent, lr=3.0))
    diagnostics = LearningRateDiagnostics(max_printed=2)
    with caplog.at_level(logging.WARNING, logger="mlp_torch.train.callbacks"):
        fit(dm, module, epochs=40, callbacks=[diagnostics])
    printed = [r.getMessage() for r in caplog.records if r.name == "mlp_torch.train.callbacks"]
    rises = diagnostics.increases
    assert len(rises) > 3 and printed[:2] == rises[:2] and len(printed) == 3
    assert "training J rose again; further rises are not printed" in printed[2]
    relative = [float(m.split()[8]) / float(m.split()[6]) - 1 for m in rises]  # "from A to B"
    assert diagnostics.largest_rise == pytest.approx(max(relative), rel=1e-4)


def test_convergence_stop_says_why():
    dm, module = make(batch_size=16, optimizer=functools.partial(Momentum, lr=0.5, alpha=0.9))
    stop = ConvergenceStop(threshold=1e-2, patience=2)
    trainer = fit(dm, module, epochs=500, callbacks=[stop])
    assert trainer.current_epoch < 500
    assert stop.reason.startswith(f"converged at epoch {trainer.current_epoch - 1}")
    assert "below 0.01 for 2 epoch(s)" in stop.reason


def test_regression_reports_mse_in_target_units():
    dm, module = make("sine", batch_size=16, optimizer=functools.partial(Momentum, lr=0.5, alpha=0.9))
    module.hparams.histograms_every_n_epochs = 0
    trainer = fit(dm, module, epochs=30)
    mse = trainer.callback_metrics["val/mse"].item()
    assert 0 < mse < 0.2  # sin(x) has variance 0.5; noise variance 0.01
    trainer.test(module, datamodule=dm, verbose=False)
    assert "test/mse" in trainer.callback_metrics


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(batch_size=0), r"batch_size=0 must be an integer >= 1"),
        (dict(batch_size="half"), r"batch_size='half' must be an integer >= 1"),
        (dict(chunk_size=-2), r"chunk_size=-2 must be an integer >= 1"),
        (dict(crosscheck_every_n_steps=-1), r"crosscheck_every_n_steps=-1"),
        (dict(grad_source="numeric"), r"grad_source='numeric' is not one of"),
        (dict(l2=-1.0), r"l2=-1.0 must be a finite number >= 0"),
        (dict(hidden_sizes=[0]), r"every layer size must be an integer >= 1, got 0"),
        (dict(task="regression"), r"task='regression' needs target_low and target_high"),
    ],
)
def test_bad_module_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        MLPModule(**kw)
