"""The lecture notes' experiments as figures, trained by this package's own code, and the numbers
they show.

Run by ``scripts/figures`` (which sets up ``.venv`` first); writes ``docs/figures/*.png``, the
numbers each figure measured into ``docs/figures/numbers.json`` (merged per figure, with the command,
the date and the machine that made them) and those numbers into ``docs/gallery.md``, between the
page's markers ``<!-- numbers:NAME -->`` and ``<!-- /numbers -->``:

    .venv/bin/python scripts/figures.py                     # every figure
    .venv/bin/python scripts/figures.py momentum penalties  # only these
    .venv/bin/python scripts/figures.py momentum --out /tmp/figs   # elsewhere (the page untouched)

Every network here is an :class:`MLPModule` (hand-written backprop, the optimizers of
:mod:`mlp_torch.optim`) trained by a Lightning ``Trainer`` on :class:`MLPDataModule`'s digits
(seed 0: 1079 training and 359 validation examples; the test split is never read). A callback
records, after each epoch, the objective ``J`` of the whole training split at the current weights
(:func:`mlp_torch.objective`) and the seconds spent in training alone. Unless a figure says
otherwise the objective is the default one without its L2 term (cross-entropy, ``l2=0``), so that
only the setting under study changes. Each figure also prints the numbers its caption is based on.

``tests/test_docs_numbers.py`` checks that the page's marked regions are what ``numbers.json``
renders to (:func:`rewrite_page`), and regenerates one figure to compare its numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import re
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning.pytorch as L
import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard_server import HeadlessChromium, TensorBoardServer, chromium, scalar_chart, scalars_url  # noqa: E402 (beside this file)

from mlp_torch import autograd_gradients, manual_gradients, objective  # noqa: E402
from mlp_torch.cli.command import main as command_main  # noqa: E402
from mlp_torch.data import MLPDataModule  # noqa: E402
from mlp_torch.model.gradcheck import relative_error  # noqa: E402
from mlp_torch.optim import GradientDescent, Momentum  # noqa: E402
from mlp_torch.train.module import NEAR_ZERO, MLPModule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures"
PAGE = ROOT / "docs" / "gallery.md"
NUMBERS = "numbers.json"  # beside the PNGs
DPI = 80  # keeps every PNG well under 200 KB
Result = tuple[Path, dict]  # a figure's PNG and the numbers it shows (JSON-able)


@dataclass
class History:
    """What one training run left behind, one entry per epoch (index 0: before training)."""

    J: list[float] = field(default_factory=list)  # training-split J at the weights after the epoch
    seconds: list[float] = field(default_factory=list)  # training time so far (evaluation excluded)
    updates: list[int] = field(default_factory=list)  # optimizer steps so far
    extra: list = field(default_factory=list)  # what the run's probe returned after each epoch
    module: MLPModule | None = None


class Recorder(L.Callback):
    """Fills a :class:`History`: J of the whole training split, the training time, the number of
    updates, and ``probe(module, data)`` if given, before training and after every epoch."""

    def __init__(self, data: MLPDataModule, probe: Callable | None = None) -> None:
        self.data, self.probe, self.history = data, probe, History()

    def _record(self, module: MLPModule, seconds: float, updates: int) -> None:
        kw = {k: module.hparams[k] for k in ("cost", "reduction")}
        with torch.no_grad():
            J = objective(module.net, self.data.x_train, self.data.y_train, **kw, **_penalties(module))
        h = self.history
        h.J.append(float(J))
        h.seconds.append(seconds)
        h.updates.append(updates)
        if self.probe is not None:
            h.extra.append(self.probe(module, self.data))

    def on_train_start(self, trainer: L.Trainer, module: MLPModule) -> None:
        self._record(module, 0.0, 0)

    def on_train_epoch_start(self, trainer: L.Trainer, module: MLPModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: MLPModule) -> None:
        h = self.history
        seconds = h.seconds[-1] + time.perf_counter() - self._started
        self._record(module, seconds, h.updates[-1] + module.epoch_stats["updates"])


def _penalties(module: MLPModule) -> dict[str, float]:
    return {k: module.hparams[k] for k in ("l1", "l2")}


def train(data: MLPDataModule, epochs: int, probe: Callable | None = None, **model_kw) -> History:
    """Fit ``MLPModule(**model_kw)`` for ``epochs`` epochs (no logger, checkpoint or validation
    loop); returns its :class:`History` with the trained module."""
    model_kw = {"l2": 0.0, "histograms_every_n_epochs": 0, "dtype": data.dtype, **model_kw}
    module = MLPModule(n_inputs=data.n_features, n_outputs=data.n_outputs, **model_kw)
    recorder = Recorder(data, probe)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[recorder],
    )
    trainer.fit(module, datamodule=data)
    recorder.history.module = module
    return recorder.history


def accuracy(module: MLPModule, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((module.net(x).argmax(dim=1) == labels).double().mean())


def save(fig, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI, pil_kwargs={"optimize": True})
    plt.close(fig)
    return path


def _rises(J: list[float]) -> int:
    """In how many epochs J rose."""
    return sum(b > a for a, b in zip(J, J[1:]))


def _log_J_axis(ax, xlabel: str) -> None:
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training J")
    ax.grid(True, which="major", alpha=0.3)


# ---- the figures ----------------------------------------------------------------------------


def learning_rate(data: MLPDataModule, out: Path) -> Result:
    """Batch gradient descent (no sampling noise) at rates from far too small to far too large."""
    rates = [0.01, 0.1, 0.3, 1, 3, 10, 30, 100]
    epochs = 300
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.cm.viridis([i / (len(rates) - 1) for i in range(len(rates))])
    numbers: dict = {"epochs": epochs, "runs": []}
    for lr, color in zip(rates, colors):
        h = train(data, epochs, batch_size="full", optimizer=partial(GradientDescent, lr=lr))
        rises = _rises(h.J)
        numbers["runs"].append(
            {
                "lr": lr,
                "J_start": h.J[0],
                "J_end": h.J[-1],
                "J_min": min(h.J),
                "J_max": max(h.J),
                "rises": rises,
            }
        )
        print(
            f"  lr {lr:>5g}: J {h.J[0]:.3g} -> {h.J[-1]:.3g} (min {min(h.J):.3g}), J rose in {rises} epochs"
        )
        ax.plot(range(len(h.J)), h.J, color=color, lw=1.2, label=f"lr {lr:g}")
    _log_J_axis(ax, "epoch (= update: batch gradient descent)")
    ax.set_title("Learning rate: batch gradient descent on digits, GradientDescent, cross-entropy")
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    return save(fig, out, "learning_rate"), numbers


def regimes(data: MLPDataModule, out: Path) -> Result:
    """Batch, stochastic and mini-batch gradient descent at the rates of configs/*.yaml."""
    runs = [  # (label, batch_size, lr, epochs): the rates of configs/batch, stochastic, minibatch.yaml
        ("batch (all 1079), lr 2", "full", 2.0, 600),
        ("stochastic (1), lr 0.05", 1, 0.05, 10),
        ("mini-batch (32), lr 1", 32, 1.0, 200),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    numbers: dict = {"runs": []}
    for label, batch_size, lr, epochs in runs:
        h = train(data, epochs, batch_size=batch_size, optimizer=partial(GradientDescent, lr=lr))
        n = len(data.x_train)
        examples = [epoch * n for epoch in range(len(h.J))]
        after_1_s = next((J for J, s in zip(h.J, h.seconds) if s >= 1), None)  # None: done within 1 s
        numbers["runs"].append({
            "label": label, "batch_size": batch_size, "lr": lr, "epochs": epochs, "updates": h.updates[-1],
            "seconds": h.seconds[-1], "ms_per_update": 1e3 * h.seconds[-1] / h.updates[-1],
            "J_start": h.J[0], "J_end": h.J[-1], "J_after_10_epochs": h.J[10], "J_after_1_s": after_1_s,
        })  # fmt: skip
        print(
            f"  {label}: {epochs} epochs, {h.updates[-1]} updates, {h.seconds[-1]:.2f} s training, "
            f"J {h.J[0]:.3g} -> {h.J[-1]:.3g}, after 10 epochs {h.J[10]:.3g}, after 1 s "
            f"{'-' if after_1_s is None else f'{after_1_s:.3g}'}"
        )
        for ax, x in zip(axes, (h.updates, examples, h.seconds)):
            ax.plot(x[1:], h.J[1:], lw=1.2, label=label)
    for ax, xlabel in zip(axes, ("updates (optimizer steps)", "examples seen", "training wall time (s)")):
        _log_J_axis(ax, xlabel)
        ax.set_xscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Batch vs stochastic vs mini-batch gradient descent (digits, GradientDescent)", fontsize=10)
    fig.tight_layout()
    return save(fig, out, "regimes"), numbers


def momentum(data: MLPDataModule, out: Path) -> Result:
    """The notes' damped momentum at one rate, alpha from 0 to 0.99."""
    lr, epochs = 10.0, 40
    fig, ax = plt.subplots(figsize=(8, 4.5))
    numbers: dict = {"lr": lr, "epochs": epochs, "batch_size": 16, "runs": []}
    for alpha in (0.0, 0.5, 0.9, 0.99):
        h = train(data, epochs, batch_size=16, optimizer=partial(Momentum, lr=lr, alpha=alpha))
        rises = _rises(h.J)
        numbers["runs"].append(
            {
                "alpha": alpha,
                "J_start": h.J[0],
                "J_1": h.J[1],
                "J_10": h.J[10],
                "J_end": h.J[-1],
                "rises": rises,
            }
        )
        print(
            f"  alpha {alpha}: J after epoch 1 {h.J[1]:.3g}, 10 {h.J[10]:.3g}, {epochs} {h.J[-1]:.3g}; "
            f"rose in {rises} epochs"
        )
        ax.plot(range(len(h.J)), h.J, lw=1.2, label=f"alpha {alpha}")
    _log_J_axis(ax, "epoch (68 mini-batches of 16)")
    ax.set_title(f"Damped momentum w += (1-a) dw_bp + a dw_prev, lr {lr:g} (Momentum, digits)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return save(fig, out, "momentum"), numbers


def _hidden_spread(module: MLPModule, data: MLPDataModule) -> float:
    """How far apart the hidden units are: the largest difference between a unit's incoming
    weights (and bias) and the first unit's, relative to the largest of them (0 if all are 0)."""
    W, b = module.net.weights[0].detach(), module.net.biases[0].detach()  # (h, n_in), (h,)
    units = torch.cat([W, b[:, None]], dim=1)  # (h, n_in + 1)
    largest = float(units.abs().max())
    return float((units - units[:1]).abs().max()) / largest if largest else 0.0


def initialization(data: MLPDataModule, out: Path) -> Result:
    """Zeros, standard normal and scaled normal weights, the notes' quadratic cost."""
    epochs = 30
    kw = dict(cost="quadratic", batch_size=16, optimizer=partial(Momentum, lr=1.0, alpha=0.9))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    data64 = MLPDataModule(seed=0, dtype="float64")
    numbers: dict = {"epochs": epochs, "runs": {}, "zeros": {}, "saturated": {}}
    for init in ("zeros", "standard_normal", "scaled_normal"):
        h = train(data, epochs, probe=_hidden_spread, init=init, **kw)
        axes[0].plot(range(len(h.J)), h.J, lw=1.2, label=init)
        numbers["runs"][init] = {"J_start": h.J[0], "J_10": h.J[10], "J_end": h.J[-1]}
        print(f"  {init}: J {h.J[0]:.3g} -> {h.J[10]:.3g} (epoch 10) -> {h.J[-1]:.3g}")
        if init == "zeros":
            h64 = train(data64, epochs, probe=_hidden_spread, init=init, **kw)
            for hist, dtype in ((h, "float32"), (h64, "float64")):
                axes[1].plot(range(len(hist.extra)), hist.extra, lw=1.2, label=f"zeros, {dtype}")
                W2 = hist.module.net.weights[1].detach()  # (n_out, h): column j = unit j's outgoing weights
                worst, eps = max(hist.extra), torch.finfo(W2.dtype).eps
                outgoing = float((W2 - W2[:, :1]).abs().max())
                numbers["zeros"][dtype] = {"J_end": hist.J[-1], "spread_max": worst,
                                           "spread_max_eps": worst / eps, "spread_end": hist.extra[-1],
                                           "outgoing": outgoing}  # fmt: skip
                print(f"  zeros {dtype}: hidden units apart by at most {worst:.2g} "
                      f"({worst / eps:.1f} eps), at the end {hist.extra[-1]:.2g}; outgoing weights apart by "
                      f"{outgoing:.2g}")  # fmt: skip
        else:
            axes[1].plot(range(len(h.extra)), h.extra, lw=1.2, label=init)
    _log_J_axis(axes[0], "epoch")
    axes[0].set_title("training J (quadratic cost)", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].set_yscale("symlog", linthresh=1e-17)  # linear near 0, so that exactly 0 shows
    axes[1].set_yticks([0, 1e-15, 1e-10, 1e-5, 1])
    axes[1].set_ylim(0, 10)
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        axes[1].axhline(eps, color="grey", lw=0.8, ls=":")
        axes[1].text(epochs, eps / 3, f"{str(dtype)[6:]} eps", fontsize=8, color="grey", ha="right", va="top")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("max_j |w_j - w_1| / max |w|")
    axes[1].set_title("are the hidden units still identical?", fontsize=10)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.9))
    for init in ("standard_normal", "scaled_normal"):
        module = MLPModule(n_inputs=data.n_features, n_outputs=data.n_outputs, init=init)
        with torch.no_grad():
            a1 = module.net.forward_pass(data.x_train)[1][1]  # (n, 100): hidden sigmoids at the start
        saturated = float(((a1 < 0.05) | (a1 > 0.95)).double().mean())
        numbers["saturated"][init] = saturated
        print(f"  {init}: {saturated:.0%} of hidden sigmoids at the start are < 0.05 or > 0.95")
        axes[2].hist(
            a1.flatten().numpy(),
            bins=40,
            range=(0, 1),
            alpha=0.6,
            label=f"{init} ({saturated:.0%} saturated)",
        )
    axes[2].set_xlabel("hidden activation a_1 = f(z_1) before training")
    axes[2].set_ylabel("count")
    axes[2].set_title("saturated sigmoids (zeros: all 0.5)", fontsize=10)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, "initialization"), numbers


def penalties(data: MLPDataModule, out: Path) -> Result:
    """L1 against L2 at the same weights lambda = gamma: accuracy, sparsity, weight histograms."""
    strengths = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    epochs, shown = 40, 1e-3
    kw = dict(batch_size=16, optimizer=partial(Momentum, lr=1.0, alpha=0.9))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    weights = {}
    numbers: dict = {"epochs": epochs, "strengths": strengths, "near_zero_below": NEAR_ZERO}
    for penalty in ("l1", "l2"):
        accs, zeros = [], []
        for s in strengths:
            h = train(data, epochs, **{**kw, penalty: s})
            W = torch.cat([w.detach().flatten() for w in h.module.net.weights])
            accs.append(accuracy(h.module, data.x_val, data.labels_val))
            zeros.append(float((W.abs() < NEAR_ZERO).double().mean()))
            if s == shown:
                weights[penalty] = h.module.net.weights[0].detach().flatten()
        numbers[penalty] = {"val_acc": accs, "near_zero": zeros}
        print(f"  {penalty}: val acc " + " ".join(f"{a:.1%}" for a in accs))
        print(f"  {penalty}: near-zero " + " ".join(f"{z:.1%}" for z in zeros))
        name = "L1 lambda" if penalty == "l1" else "L2 gamma"
        axes[0].plot(strengths, accs, "o-", label=name)
        axes[1].plot(strengths, zeros, "o-", label=name)
    for ax, ylabel in zip(axes[:2], ("validation accuracy", f"fraction of weights with |w| < {NEAR_ZERO:g}")):
        ax.set_xscale("log")
        ax.set_xlabel("penalty weight (lambda for L1, gamma for L2)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    bins = torch.linspace(-1, 1, 81).numpy()
    for penalty, w in weights.items():
        axes[2].hist(
            w.clamp(-1, 1).numpy(), bins=bins, histtype="step", lw=1.5, label=f"{penalty} = {shown:g}"
        )
    axes[2].set_yscale("log")
    axes[2].set_xlabel("first-layer weight (clipped to [-1, 1])")
    axes[2].set_ylabel("count")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"L1 vs L2 (digits, Momentum lr 1, alpha 0.9, {epochs} epochs)", fontsize=10)
    fig.tight_layout()
    return save(fig, out, "penalties"), numbers


def _layer_errors(module: MLPModule, data: MLPDataModule) -> list[float]:
    """Per layer, the relative error between the hand-written and autograd gradients of the
    training objective (weights and bias together) on the whole training split."""
    kw = {k: module.hparams[k] for k in ("cost", "reduction")} | _penalties(module)
    x, y = data.x_train, data.y_train
    manual, auto = manual_gradients(module.net, x, y, **kw), autograd_gradients(module.net, x, y, **kw)
    errors = []
    for i in range(len(module.net.layers)):
        names = (f"layers.{i}.weight", f"layers.{i}.bias")
        flat = [torch.cat([g[n].flatten() for n in names]) for g in (manual, auto)]
        errors.append(relative_error(*flat))
    return errors


def gradient_agreement(data: MLPDataModule, out: Path) -> Result:
    """Hand-written backprop against autograd per layer, as the default network trains."""
    epochs = 30
    fig, ax = plt.subplots(figsize=(8, 4.5))
    numbers: dict = {"epochs": epochs}
    for dtype, style in (("float32", "-"), ("float64", "--")):
        d = data if dtype == data.dtype else MLPDataModule(seed=0, dtype=dtype)
        h = train(d, epochs, probe=_layer_errors, l2=1e-4)  # the default setup, in each dtype
        per_layer = list(zip(*h.extra))
        eps = torch.finfo(getattr(torch, dtype)).eps
        numbers[dtype] = {"eps": eps, "layers": [{"min": min(e), "max": max(e)} for e in per_layer]}
        for i, errors in enumerate(per_layer):
            ax.plot(range(len(errors)), errors, style, color=f"C{i}", lw=1.2, label=f"layer {i + 1}, {dtype}")
            print(f"  {dtype} layer {i + 1}: relative error {min(errors):.2g} .. {max(errors):.2g}")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 1e-5)
    ax.axhline(torch.finfo(torch.float32).eps, color="grey", lw=0.8, ls=":")
    ax.axhline(torch.finfo(torch.float64).eps, color="grey", lw=0.8, ls=":")
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        ax.text(epochs, eps / 2.5, f"{str(dtype)[6:]} eps", fontsize=8, color="grey", ha="right")
    ax.set_xlabel("epoch (the default: Momentum lr 3, batch 16, L2 1e-4)")
    ax.set_ylabel("||g_manual - g_autograd|| / max ||g||")
    ax.set_title("Hand-written backprop vs autograd, per layer, on the whole training split", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save(fig, out, "gradient_agreement"), numbers


SWEEP = ["--trainer.max_epochs", "40", "--grid", "model.optimizer.lr=[0.3, 1, 3, 10]"]  # digits, the default


def tensorboard(data: MLPDataModule, out: Path) -> Result | None:
    """TensorBoard's Scalars dashboard over an ``mlp-torch sweep``, as headless Chromium shows it."""
    if chromium() is None:
        print(
            "  skipped: no chromium installed (Debian: apt-get install chromium); the PNG is kept as it was"
        )
        return None
    with tempfile.TemporaryDirectory() as folder:
        sweep_dir = Path(folder) / "sweep"
        code = command_main(["sweep", *SWEEP, "--sweep_dir", str(sweep_dir)])
        if code != 0:
            raise RuntimeError(f"mlp-torch sweep {' '.join(SWEEP)} failed with exit code {code}")
        runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
        with TensorBoardServer(sweep_dir) as tb:
            tb.wait_for_runs(runs)
            with HeadlessChromium(scalars_url(tb, "^(train|val)/J$"), size=(1200, 760)) as page:
                state = scalar_chart(page, "train/J", runs)
                scalar_chart(page, "val/J", runs)
                path = page.screenshot(out / "tensorboard.png")
    lines = len(state["cards"][0]["colours"])
    print(f"  {len(runs)} member runs {runs}: the train/J chart drew {lines} lines")
    return path, {"sweep": shlex.join(["mlp-torch", "sweep", *SWEEP]), "runs": runs, "lines": lines}


FIGURES: dict[str, Callable[[MLPDataModule, Path], Result | None]] = {
    "learning_rate": learning_rate,
    "regimes": regimes,
    "momentum": momentum,
    "initialization": initialization,
    "penalties": penalties,
    "gradient_agreement": gradient_agreement,
    "tensorboard": tensorboard,
}


# ---- the numbers, and the page that quotes them ---------------------------------------------


def machine() -> dict:
    """The machine the numbers were made on: CPU model, cores, PyTorch's CPU capability (its
    kernels' instruction set) and the CPU the native loop (numba) compiles for."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    try:
        import llvmlite.binding as llvm

        native_cpu = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    except ImportError:
        native_cpu = None
    capability = torch.backends.cpu.get_cpu_capability()
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_capability": capability, "native_cpu": native_cpu,
            "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip


def read_numbers(folder: Path) -> dict:
    """``numbers.json`` in ``folder``: ``{figure: {"command", "date", "machine", "seconds", "numbers"}}``
    (empty if there is none)."""
    path = folder / NUMBERS
    return json.loads(path.read_text()) if path.exists() else {}


def write_numbers(folder: Path, name: str, entry: dict) -> None:
    """Merge one figure's entry into ``numbers.json`` in ``folder`` (the others are kept)."""
    entries = read_numbers(folder) | {name: entry}
    ordered = {n: entries[n] for n in [*FIGURES, *sorted(set(entries) - set(FIGURES))] if n in entries}
    (folder / NUMBERS).write_text(json.dumps(ordered, indent=1) + "\n")


def _g(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _render_learning_rate(n: dict) -> str:
    rows = [[f"{r['lr']:g}", _g(r["J_start"]), _g(r["J_end"]), _g(r["J_min"]), _g(r["J_max"]),
             str(r["rises"])] for r in n["runs"]]  # fmt: skip
    header = ["lr", "J at the start", f"J after {n['epochs']} epochs", "lowest J", "highest J",
              f"epochs in which J rose (of {n['epochs']})"]  # fmt: skip
    return _table(header, rows)


def _render_regimes(n: dict) -> str:
    rows = [[r["label"], str(r["epochs"]), str(r["updates"]), f"{r['seconds']:.2f} s",
             f"{r['ms_per_update']:.3f} ms", _g(r["J_after_10_epochs"]), _g(r["J_after_1_s"]), _g(r["J_end"])]
            for r in n["runs"]]  # fmt: skip
    header = ["run", "epochs", "updates", "training time", "per update", "J after 10 epochs",
              "J after 1 s of training", "J at the end"]  # fmt: skip
    return _table(header, rows) + '\n\n("-": the run\'s training took less than 1 s.)'


def _render_momentum(n: dict) -> str:
    rows = [
        [f"{r['alpha']:g}", _g(r["J_1"]), _g(r["J_10"]), _g(r["J_end"]), str(r["rises"])] for r in n["runs"]
    ]
    header = ["alpha", "J after 1 epoch", "after 10", f"after {n['epochs']}",
              f"epochs in which J rose (of {n['epochs']})"]  # fmt: skip
    return f"lr {n['lr']:g}, mini-batches of {n['batch_size']}:\n\n" + _table(header, rows)


def _render_initialization(n: dict) -> str:
    saturated = {"zeros": "0% (all 0.5)"} | {k: f"{v:.0%}" for k, v in n["saturated"].items()}
    rows = [
        [init, _g(r["J_start"]), _g(r["J_10"]), _g(r["J_end"]), saturated[init]]
        for init, r in n["runs"].items()
    ]
    header = ["init", "J at the start", "after 10 epochs", f"after {n['epochs']}",
              "hidden sigmoids < 0.05 or > 0.95 at the start"]  # fmt: skip
    z32, z64 = n["zeros"]["float32"], n["zeros"]["float64"]
    return _table(header, rows) + (
        f"\n\nZero weights: over {n['epochs']} epochs the hidden units' incoming weights are at most "
        f"{_g(z32['spread_max_eps'], 2)} float32 eps apart ({_g(z64['spread_max_eps'], 2)} float64 eps in "
        f"float64), "
        f"relative to the largest weight; their outgoing weights are apart by {_g(z32['outgoing'], 2)} "
        f"(float32) and {_g(z64['outgoing'], 2)} (float64)."
    )


def _render_penalties(n: dict) -> str:
    l1, l2, below = n["l1"], n["l2"], f"{n['near_zero_below']:g}"
    rows = [[f"{s:.0e}", *(_pct(p[k][i]) for k in ("val_acc", "near_zero") for p in (l1, l2))]
            for i, s in enumerate(n["strengths"])]  # fmt: skip
    header = ["lambda = gamma", "L1: validation accuracy", "L2: validation accuracy",
              f"L1: weights with \\|w\\| < {below}", f"L2: weights with \\|w\\| < {below}"]  # fmt: skip
    return f"After {n['epochs']} epochs:\n\n" + _table(header, rows)


def _render_gradient_agreement(n: dict) -> str:
    rows = []
    for i in range(len(n["float32"]["layers"])):
        cells = [f"layer {i + 1}"]
        for dtype in ("float32", "float64"):
            e, eps = n[dtype]["layers"][i], n[dtype]["eps"]
            cells += [f"{e['min']:.2g} .. {e['max']:.2g}", f"{e['min'] / eps:.1f} .. {e['max'] / eps:.1f}"]
        rows.append(cells)
    header = [
        "layer",
        "float32: relative error",
        "in float32 eps",
        "float64: relative error",
        "in float64 eps",
    ]
    return f"Over {n['epochs']} epochs (lowest .. highest):\n\n" + _table(header, rows)


def _render_tensorboard(n: dict) -> str:
    return (f"`{n['sweep']}`: {len(n['runs'])} member runs ({', '.join(n['runs'])}); the `train/J` chart "
            f"drew {n['lines']} lines.")  # fmt: skip


RENDER: dict[str, Callable[[dict], str]] = {
    "learning_rate": _render_learning_rate,
    "regimes": _render_regimes,
    "momentum": _render_momentum,
    "initialization": _render_initialization,
    "penalties": _render_penalties,
    "gradient_agreement": _render_gradient_agreement,
    "tensorboard": _render_tensorboard,
}


def render(name: str, entry: dict | None) -> str:
    """A figure's numbers as the page quotes them, with the command, date and machine."""
    if entry is None:
        return (
            f"_`docs/figures/{NUMBERS}` holds no numbers of this figure: "
            f"`scripts/figures {name}` writes them._"
        )
    m = entry["machine"]
    made = (f"_`{entry['command']}`, {entry['date']}: {m['cpu']}, {m['cores']} cores, PyTorch CPU "
            f"capability {m['cpu_capability']}, native loop compiled for {m['native_cpu']}, torch "
            f"{m['torch']}._")  # fmt: skip
    return RENDER[name](entry["numbers"]) + "\n\n" + made


MARKED = re.compile(r"(<!-- numbers:(?P<name>\w+) -->\n)(?P<body>.*?)(<!-- /numbers -->)", re.S)


def marked_names(text: str) -> list[str]:
    """The figures whose numbers ``text`` quotes between markers."""
    return [m["name"] for m in MARKED.finditer(text)]


def rewrite_page(text: str, entries: dict) -> str:
    """``text`` with each marked region ``<!-- numbers:NAME -->`` ... ``<!-- /numbers -->``
    replaced by :func:`render` of NAME's entry in ``entries`` (``numbers.json``)."""

    def one(m: re.Match) -> str:
        if m["name"] not in RENDER:
            raise KeyError(
                f"the page marks numbers of {m['name']!r}, which is no figure: {', '.join(RENDER)}"
            )
        return m.group(1) + render(m["name"], entries.get(m["name"])) + "\n" + m.group(4)

    return MARKED.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"figures to make (default: all): {', '.join(FIGURES)}"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"folder of the PNGs and {NUMBERS} (default: docs/figures)"
    )
    parser.add_argument("--page", type=Path, help="the page whose marked regions quote the numbers (default: "
                        "docs/gallery.md when --out is the default, none otherwise)")  # fmt: skip
    parser.add_argument(
        "--render", action="store_true", help=f"only rewrite the page's numbers from {NUMBERS}"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in FIGURES]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}: use some of {', '.join(FIGURES)}")
    out = args.out.resolve()
    page = args.page or (PAGE if out == OUT else None)
    if args.render and page is None:
        parser.error("--render: no page (give --page, or leave --out at its default)")
    if not args.render:
        make(args.names or list(FIGURES), out, shlex.join(["scripts/figures", *argv]))
    if page is not None:
        text = page.read_text()
        page.write_text(rewrite_page(text, read_numbers(out)))
        print(f"{page}: the numbers of {', '.join(marked_names(text))} from {out / NUMBERS}")
    return 0


def make(names: list[str], out: Path, command: str) -> None:
    """Make the figures ``names`` into ``out``, merging each one's numbers into its ``numbers.json``."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "mlp_torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    data = MLPDataModule(seed=0)
    started, about = time.perf_counter(), machine()
    for name in names:
        t = time.perf_counter()
        print(f"{name}:")
        made = FIGURES[name](data, out)
        if made is None:
            continue
        path, numbers = made
        seconds = time.perf_counter() - t
        date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        entry = {
            "command": command,
            "date": date,
            "machine": about,
            "seconds": round(seconds, 1),
            "numbers": numbers,
        }
        write_numbers(out, name, entry)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"  -> {shown} ({path.stat().st_size / 1024:.0f} KB, {seconds:.1f} s)")
    print(f"figures: done in {time.perf_counter() - started:.1f} s; numbers in {out / NUMBERS}")


if __name__ == "__main__":
    sys.exit(main())
