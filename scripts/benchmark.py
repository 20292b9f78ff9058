"""How fast `mlp-torch` trains, against its peers, measured side by side in one process.

    .venv/bin/python scripts/benchmark.py --out benchmark.json     # about 3-5 minutes on 2 cores
    .venv/bin/python scripts/benchmark.py --out docs/performance/  # this machine's table, its page too

``--out FOLDER/`` writes ``FOLDER/<machine>.json`` (:func:`machine_slug`: CPU model, cores, PyTorch's
CPU capability). A JSON written under ``docs/performance/`` is rendered into ``docs/performance.md``
between the page's markers ``<!-- benchmark:performance/<machine>.json -->`` and
``<!-- /benchmark -->`` (a machine the page has no table for gets one at the end);
``--markdown PAGE`` names the page, ``--render`` rewrites it from its JSON files without measuring.
``tests/test_docs_numbers.py`` checks that the page's tables are what the JSON files render to.

1. Per update, digits (1,078 training examples), the 64-100-10 sigmoid network, the default
   objective (cross-entropy, L2 1e-4, mean over the batch) and the notes' damped momentum (lr 3,
   alpha 0.9), at batch 1, 16, 100 and full (1,078), for:

   - ``C epoch (the limit)``: the same epochs in C (:data:`C_EPOCH`, ``-O3 -march=native``): what a
     loop over these arrays reaches on this CPU;
   - ``native epoch alone``: ``mlp_torch.train.native.epoch`` called directly once per epoch, as
     ``MLPModule`` calls it: the compiled loop without Lightning and the module's epoch work;
   - ``numpy``: a hand-written numpy loop (at batch 1 with vectors: ``W @ x``, ``np.outer``);
   - ``torch plain``: plain tensors, hand-written backprop and momentum, no optimizer class;
   - ``torch autograd+SGD``: ``nn.Sequential``, autograd and ``torch.optim.SGD(momentum=0.9,
     dampening=0.9)``, the damped rule (its first step differs, see ``mlp_torch.optim.Momentum``);
   - ``sklearn``: scikit-learn's ``MLPClassifier`` (logistic units, sgd, momentum 0.9; its output
     layer is a softmax: a peer, not the same objective), fit time over its updates;
   - ``MLPModule lean``: a ``Trainer`` with no logger, validation, checkpoints or progress bar;
   - ``MLPModule shipped``: what ``mlp-torch fit`` builds (TensorBoard logger and histograms,
     validation each epoch, best and last checkpoints, progress bar), through the CLI's own code;

   both MLPModule rows with ``grad_source`` ``manual`` and ``autograd``, and ``MLPModule lean torch
   loop``: the lean manual row with ``native=False`` (the torch loop where the native epoch loop,
   :mod:`mlp_torch.train.native`, would train). The timed stretch skips
   the first epoch (warm-up) and, for MLPModule, the Trainer's start: it runs from the start of
   epoch 1 to the end of training, so it includes every later epoch's validation, checkpoint and
   logging. Threads: by the rule of ``mlp_torch.train.threads`` (one for this network), the same for all.
2. The wide network 784-1024-1024-10 at batch 512 (random data), both gradient sources, against
   ``torch.mm`` alone on the same matrix products of one update (forward, deltas, weight
   gradients, the same operand layouts): the fraction of matmul peak reached.
3. Whole processes: the default ``mlp-torch fit`` (its test accuracy too), the same beside one
   busy process (a CPU-bound loop), and ``mlp-torch gradcheck``.
4. Sweeps: the training phase of one default fit against 32-member ``mlp-torch sweep`` grids of
   the same network, data, batch size and epochs, members sharing a seed and each with its own
   (:func:`speed_ratios`), one after the other, once, with the time each spends in the native
   loop's compiled epochs (a sweep's floor); and the training phase of ``mlp-torch fit --config
   stochastic`` (per-example descent), once.

Every measurement runs ``--rounds`` times, the methods taking turns within each round; the table
shows the median, with min and max in the JSON (``--out``). Runs on CUDA too when present
(``--device``): the torch rows then run there (numpy and scikit-learn stay on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from mlp_torch.data import MLPDataModule
from mlp_torch.model.network import SigmoidMLP
from mlp_torch.train.loop import epoch_permutation
from mlp_torch.train.module import DEFAULT_ALPHA, DEFAULT_L2, DEFAULT_LR, MLPModule
from mlp_torch.train.threads import choose_num_threads

ROOT = Path(__file__).resolve().parents[1]
BATCHES = [1, 16, 100, "full"]
EPOCHS = {1: 4, 16: 30, 100: 60, "full": 100}  # timed epochs are these minus the warm-up one
WIDE, WIDE_BATCH = [784, 1024, 1024, 10], 512
TARGETS = [  # (what, batch, than what, at least this many times faster): ratios of medians
    ("MLPModule lean manual", 1, "numpy", 5.0),
    ("MLPModule lean manual", 1, "C epoch (the limit)", 0.1),  # within 10x of the C epoch
    ("MLPModule lean manual", 16, "numpy", 2.0),
    ("MLPModule lean manual", 100, "numpy", 1.0),
]


def describe_machine(device: str) -> dict:
    """The machine: CPU model (``/proc/cpuinfo``), cores, PyTorch's CPU capability (the instruction
    set of its kernels), the CPU the native loop (numba) compiles for, versions, the GPU if used."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    try:
        import llvmlite.binding as llvm
        import numba

        native_cpu, numba_version = (
            os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name(),
            numba.__version__,
        )
    except ImportError:
        native_cpu = numba_version = None
    return {
        "cpu": cpu, "arch": platform.machine(), "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_cpu": native_cpu,
        "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "torch": torch.__version__, "numba": numba_version, "python": platform.python_version(),
    }  # fmt: skip


def machine_slug(machine: dict) -> str:
    """A file name for the machine: ``amd-epyc-2-cores-avx512`` (a GPU's name appended if used)."""
    parts = [machine["cpu"], f"{machine['cores']} cores", machine.get("cpu_capability") or ""]
    if machine.get("gpu"):
        parts.append(machine["gpu"])
    return re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- the peers: plain loops --------------------------------------------------------------------


class Clock:
    """Seconds and updates from the start of epoch 1 (epoch 0 warms up)."""

    def __init__(self, device: str):
        self.device, self.began, self.updates = device, 0.0, 0

    def restart(self) -> None:
        sync(self.device)
        self.began, self.updates = time.perf_counter(), 0

    def stop(self) -> tuple[float, int]:
        sync(self.device)
        return time.perf_counter() - self.began, self.updates


def torch_batches(x, y, batch, epochs: int, clock: Clock):
    """Each epoch's batches in `mlp-torch`'s shuffle order; restarts ``clock`` at epoch 1."""
    n = len(x)
    size = n if batch == "full" else batch
    for epoch in range(epochs):
        if epoch == 1:
            clock.restart()
        order = (torch.arange(n) if batch == "full" else epoch_permutation(n, 0, epoch)).to(x.device)
        yield from zip(x[order].split(size), y[order].split(size))


def numpy_loop(x: np.ndarray, y: np.ndarray, batch, epochs: int) -> tuple[float, int]:
    """Hand-written numpy backprop of the default objective, damped momentum; per-example
    updates with vectors (``W @ x``, ``np.outer``)."""
    net = SigmoidMLP([64, 100, 10], seed=0).double()
    W = [w.detach().numpy().astype(x.dtype) for w in net.weights]  # (out, in)
    b = [v.detach().numpy().astype(x.dtype) for v in net.biases]
    dW, db = [np.zeros_like(w) for w in W], [np.zeros_like(v) for v in b]
    lr, alpha, l2, n = DEFAULT_LR, DEFAULT_ALPHA, DEFAULT_L2, len(x)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    size = n if batch == "full" else batch
    start, updates = 0.0, 0
    for epoch in range(epochs):
        if epoch == 1:
            start, updates = time.perf_counter(), 0
        order = np.arange(n) if batch == "full" else epoch_permutation(n, 0, epoch).numpy()
        for k in range(0, n, size):
            i = order[k : k + size]
            if size == 1:  # vectors: one example
                xi, yi = x[i[0]], y[i[0]]
                a1 = sig(W[0] @ xi + b[0])
                a2 = sig(W[1] @ a1 + b[1])
                d2 = a2 - yi
                d1 = (W[1].T @ d2) * a1 * (1 - a1)
                grads = [(np.outer(d1, xi), d1), (np.outer(d2, a1), d2)]
            else:
                xb, yb, s = x[i], y[i], 1.0 / len(i)
                a1 = sig(xb @ W[0].T + b[0])
                a2 = sig(a1 @ W[1].T + b[1])
                d2 = (a2 - yb) * s
                d1 = (d2 @ W[1]) * a1 * (1 - a1)
                grads = [(d1.T @ xb, d1.sum(0)), (d2.T @ a1, d2.sum(0))]
            for j, (gW, gb) in enumerate(grads):
                gW = gW + 2 * l2 * W[j]
                dW[j] = alpha * dW[j] - (1 - alpha) * lr * gW
                db[j] = alpha * db[j] - (1 - alpha) * lr * gb
                W[j] += dW[j]
                b[j] += db[j]
            updates += 1
    return time.perf_counter() - start, updates


def native_epoch_loop(x: np.ndarray, y: np.ndarray, batch, epochs: int) -> tuple[float, int]:
    """``mlp_torch.train.native.epoch`` called as ``MLPModule`` calls it, once per epoch on the
    epoch's rows in its shuffle order (the default objective, damped momentum): the compiled loop
    without Lightning's loop and the module's work around it (J, metrics, logging)."""
    from mlp_torch.train import native

    net = SigmoidMLP([64, 100, 10], seed=0).to(torch.float32)
    flat = torch.cat([p.detach().reshape(-1) for p in [*net.weights, *net.biases]])[None].numpy().copy()
    grad, state = np.zeros_like(flat), np.zeros_like(flat)
    n = len(x)
    size = n if batch == "full" else batch
    starts = np.append(np.arange(0, n, size), n)
    scales = 1.0 / np.diff(starts)
    costs, sums = np.empty((1, len(scales)), x.dtype), np.zeros((2, 1, len(scales)), x.dtype)
    start, updates = 0.0, 0
    for epoch in range(epochs):
        if epoch == 1:
            start, updates = time.perf_counter(), 0
        order = None if batch == "full" else epoch_permutation(n, 0, epoch).numpy()
        native.epoch(
            flat, grad, state, x, y, costs, sums, [64, 100, 10], starts, scales, cost="cross_entropy",
            rule=native.RULES["Momentum"], l1=[0.0], l2=[DEFAULT_L2], lr=[DEFAULT_LR], alpha=[DEFAULT_ALPHA],
            active=[True], order=order,
        )  # fmt: skip
        updates += len(scales)
    return time.perf_counter() - start, updates


def torch_plain_loop(x, y, batch, epochs: int, device: str) -> tuple[float, int]:
    """Plain tensors, hand-written backprop of the default objective and damped momentum."""
    net = SigmoidMLP([64, 100, 10], seed=0).to(x.dtype)
    W = [w.detach().to(device).clone() for w in net.weights]
    b = [v.detach().to(device).clone() for v in net.biases]
    params = [*W, *b]
    dws = [torch.zeros_like(p) for p in params]
    lr, alpha, l2 = DEFAULT_LR, DEFAULT_ALPHA, DEFAULT_L2
    clock = Clock(device)
    with torch.no_grad():
        for xb, yb in torch_batches(x, y, batch, epochs, clock):
            a1 = torch.sigmoid(torch.addmm(b[0], xb, W[0].T))
            a2 = torch.sigmoid(torch.addmm(b[1], a1, W[1].T))
            d2 = (a2 - yb) / len(xb)
            d1 = (d2 @ W[1]) * a1 * (1 - a1)
            grads = [d1.T @ xb + 2 * l2 * W[0], d2.T @ a1 + 2 * l2 * W[1], d1.sum(0), d2.sum(0)]
            for p, dw, g in zip(params, dws, grads):
                dw.mul_(alpha).add_(g, alpha=-(1 - alpha) * lr)
                p.add_(dw)
            clock.updates += 1
    return clock.stop()


def torch_autograd_loop(x, y, batch, epochs: int, device: str) -> tuple[float, int]:
    """``nn.Sequential``, autograd of the default objective, ``torch.optim.SGD`` (damped)."""
    net = SigmoidMLP([64, 100, 10], seed=0)
    model = nn.Sequential(net.layers[0], nn.Sigmoid(), net.layers[1]).to(device=device, dtype=x.dtype)
    opt = torch.optim.SGD(model.parameters(), lr=DEFAULT_LR, momentum=DEFAULT_ALPHA, dampening=DEFAULT_ALPHA)
    weights = [model[0].weight, model[2].weight]
    clock = Clock(device)
    for xb, yb in torch_batches(x, y, batch, epochs, clock):
        z = model(xb)
        cost = nn.functional.binary_cross_entropy_with_logits(z, yb, reduction="sum") / len(xb)
        loss = cost + DEFAULT_L2 * sum((w * w).sum() for w in weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        clock.updates += 1
    return clock.stop()


def sklearn_fit(x: np.ndarray, labels: np.ndarray, batch, epochs: int) -> tuple[float, int]:
    """scikit-learn's MLPClassifier, logistic units, sgd with momentum 0.9 (not Nesterov)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    n = len(x)
    clf = MLPClassifier(
        hidden_layer_sizes=(100,), activation="logistic", solver="sgd", momentum=DEFAULT_ALPHA,
        nesterovs_momentum=False, learning_rate_init=0.1, alpha=2 * DEFAULT_L2,
        batch_size=n if batch == "full" else batch, max_iter=epochs, tol=0.0,
        n_iter_no_change=epochs + 1, random_state=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(x, labels)
        seconds = time.perf_counter() - start
    return seconds, clf.n_iter_ * math.ceil(n / (n if batch == "full" else batch))


C_EPOCH = r"""
#include <math.h>
/* The benchmark's loop in C: 64-100-10 sigmoid network, cross-entropy (delta_L = a - y), L2,
   the notes' damped momentum; each batch of `order` in turn. Compiled -O3 -march=native. */
enum { I = 64, H = 100, O = 10 };
void epoch(const float *x, const float *y, const long *order, long n, long batch,
           float *W1, float *b1, float *W2, float *b2, float *m1, float *mb1, float *m2, float *mb2,
           float lr, float alpha, float l2) {
    static float a1[H], d1[H], a2[O], d2[O], g1[H * I], gb1[H], g2[O * H], gb2[O];
    float c = (alpha - 1.0f) * lr;
    for (long start = 0; start < n; start += batch) {
        long stop = start + batch < n ? start + batch : n;
        float s = 1.0f / (float)(stop - start);
        for (long p = 0; p < H * I; p++) g1[p] = 0.0f;
        for (long p = 0; p < O * H; p++) g2[p] = 0.0f;
        for (long j = 0; j < H; j++) gb1[j] = 0.0f;
        for (long j = 0; j < O; j++) gb2[j] = 0.0f;
        for (long e = start; e < stop; e++) {
            const float *xi = x + order[e] * I, *yi = y + order[e] * O;
            for (long j = 0; j < H; j++) {
                float z = b1[j];
                for (long k = 0; k < I; k++) z += W1[j * I + k] * xi[k];
                a1[j] = 1.0f / (1.0f + expf(-z));
            }
            for (long j = 0; j < O; j++) {
                float z = b2[j];
                for (long k = 0; k < H; k++) z += W2[j * H + k] * a1[k];
                a2[j] = 1.0f / (1.0f + expf(-z));
                d2[j] = (a2[j] - yi[j]) * s;
            }
            for (long k = 0; k < H; k++) d1[k] = 0.0f;
            for (long j = 0; j < O; j++) {
                gb2[j] += d2[j];
                for (long k = 0; k < H; k++) {
                    g2[j * H + k] += d2[j] * a1[k];
                    d1[k] += W2[j * H + k] * d2[j];
                }
            }
            for (long j = 0; j < H; j++) {
                float d = d1[j] * a1[j] * (1.0f - a1[j]);
                gb1[j] += d;
                for (long k = 0; k < I; k++) g1[j * I + k] += d * xi[k];
            }
        }
        for (long p = 0; p < H * I; p++) {
            m1[p] = alpha * m1[p] + c * (g1[p] + 2.0f * l2 * W1[p]);
            W1[p] += m1[p];
        }
        for (long p = 0; p < O * H; p++) {
            m2[p] = alpha * m2[p] + c * (g2[p] + 2.0f * l2 * W2[p]);
            W2[p] += m2[p];
        }
        for (long j = 0; j < H; j++) { mb1[j] = alpha * mb1[j] + c * gb1[j]; b1[j] += mb1[j]; }
        for (long j = 0; j < O; j++) { mb2[j] = alpha * mb2[j] + c * gb2[j]; b2[j] += mb2[j]; }
    }
}
"""


@functools.cache
def _c_epoch_library():
    """:data:`C_EPOCH` compiled once per process (``None`` without a C compiler)."""
    import ctypes
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as folder:  # the loaded library outlives its file
        source, library = Path(folder) / "epoch.c", Path(folder) / "epoch.so"
        source.write_text(C_EPOCH)
        subprocess.run([compiler, "-O3", "-march=native", "-shared", "-fPIC", str(source), "-o", str(library),
                        "-lm"], check=True)  # fmt: skip
        return ctypes.CDLL(str(library))


def c_epoch_loop(x: np.ndarray, y: np.ndarray, batch, epochs: int) -> tuple[float, int]:
    """The same epochs in C (:data:`C_EPOCH`, compiled here with the machine's ``cc``): the limit a
    loop over these arrays reaches on this CPU, for the native loop's "within 10x" target.
    ``(nan, 1)`` when no C compiler is found."""
    import ctypes

    lib = _c_epoch_library()
    if lib is None:
        return math.nan, 1
    net = SigmoidMLP([64, 100, 10], seed=0)
    start_at = (net.weights[0], net.biases[0], net.weights[1], net.biases[1])
    arrays = [p.detach().numpy().astype(np.float32).copy() for p in start_at]
    buffers = [np.zeros_like(a) for a in arrays]
    W1, b1, W2, b2 = arrays
    m1, mb1, m2, mb2 = buffers
    n = len(x)
    x, y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)
    pointer = np.ctypeslib.ndpointer
    floats, arrays_of = ctypes.c_float, pointer(np.float32)
    lib.epoch.argtypes = [arrays_of, arrays_of, pointer(np.int64), ctypes.c_long, ctypes.c_long,
                          *[arrays_of] * 8, floats, floats, floats]  # fmt: skip
    size = n if batch == "full" else batch
    start = 0.0
    for epoch in range(epochs):
        if epoch == 1:
            start = time.perf_counter()
        order = np.arange(n) if batch == "full" else epoch_permutation(n, 0, epoch).numpy()
        lib.epoch(x, y, order.astype(np.int64), n, size, W1, b1, W2, b2, m1, mb1, m2, mb2, DEFAULT_LR,
                  DEFAULT_ALPHA, DEFAULT_L2)  # fmt: skip
    return time.perf_counter() - start, (epochs - 1) * math.ceil(n / size)


# ---- MLPModule ----------------------------------------------------------------------------------


class Stopwatch(L.Callback):
    """From the start of epoch 1 to the end of training; counts the updates in between."""

    def __init__(self, device: str):
        self.device, self.start, self.seconds, self.first = device, None, None, 0

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            sync(self.device)
            self.start, self.first = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, pl_module):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start
        self.updates = trainer.global_step - self.first


def module_lean(dm: MLPDataModule, batch, epochs: int, source: str, device: str, sizes=None, native=True):
    module = MLPModule(
        hidden_sizes=(sizes or [64, 100, 10])[1:-1], n_inputs=dm.n_features, n_outputs=dm.n_outputs,
        batch_size=batch, grad_source=source, histograms_every_n_epochs=0, native=native,
    )  # fmt: skip
    watch = Stopwatch(device)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[watch],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return watch.seconds, watch.updates


def module_shipped(batch, epochs: int, source: str, device: str):
    """What `mlp-torch fit` runs, built by the CLI's own code, in a temporary folder."""
    from mlp_torch.cli.fit import make_cli

    watch = Stopwatch(device)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        cli = make_cli([
            "--trainer.max_epochs", str(epochs), "--model.batch_size", str(batch),
            "--model.grad_source", source, "--trainer.accelerator", "gpu" if device == "cuda" else "cpu",
            "--convergence.enabled", "false",
        ], run=False)  # fmt: skip
        cli.trainer.callbacks.append(watch)
        quiet = open(os.devnull, "w")  # noqa: SIM115 (closed below)
        with quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return watch.seconds, watch.updates


# ---- the wide network ---------------------------------------------------------------------------


def wide_products_seconds(device: str, dtype, reps: int) -> float:
    """``torch.mm`` alone on one update's matrix products of the wide network (the operand
    layouts of :func:`mlp_torch.model.fused.fused_backprop`), seconds per update."""
    gen = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=dtype).to(device)  # noqa: E731
    W = [rand(o, i) for i, o in zip(WIDE, WIDE[1:])]
    acts = [rand(WIDE_BATCH, n) for n in WIDE]  # a_0 = x, ..., a_L
    deltas = [rand(WIDE_BATCH, n) for n in WIDE[1:]]

    def update():
        for l, w in enumerate(W):  # forward: a_{l-1} W_l^T
            torch.mm(acts[l], w.T)
        for l in range(len(W) - 1, -1, -1):
            torch.mm(deltas[l].T, acts[l])  # grad W_l
            if l:
                torch.mm(deltas[l], W[l])  # delta_l W_l, toward delta_{l-1}

    update()
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        update()
    sync(device)
    return (time.perf_counter() - start) / reps


def wide_data(folder: str) -> MLPDataModule:
    rng = np.random.default_rng(0)
    n = 2200  # 2,112 training examples after the 2 % val and test splits: 4 updates of 512 or so
    x = rng.random((n, WIDE[0]), dtype=np.float32)
    labels = rng.integers(0, WIDE[-1], n)
    np.savez(Path(folder) / "wide.npz", x=x, y=labels)
    return MLPDataModule(str(Path(folder) / "wide.npz"), val_fraction=0.02, test_fraction=0.02, seed=0)


# ---- whole processes ----------------------------------------------------------------------------

MLP_TORCH = [sys.executable, "-c", "import sys; from mlp_torch.cli.command import main; sys.exit(main())"]


def whole_process(args: list[str], busy: bool = False) -> tuple[float, str]:
    """Seconds from start to exit of ``mlp-torch ARGS`` in a temporary folder, and its output;
    with ``busy``, beside one CPU-bound process."""
    path = [str(ROOT), os.environ.get("PYTHONPATH")]  # the caller's too: packages installed there
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    env.pop("OMP_NUM_THREADS", None)  # the default: as a user runs it
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            done = subprocess.run(MLP_TORCH + args, cwd=folder, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    if done.returncode != 0:  # a time of a run that failed would be no figure at all
        raise RuntimeError(f"mlp-torch {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
    return seconds, done.stdout + done.stderr


# ---- the run ------------------------------------------------------------------------------------


# ---- sweeps: 32 members against one fit -------------------------------------------------------

SPEED_GRIDS = {  # 32 members of the default network, data, batch size and epochs
    "shared seed": [
        "model.optimizer.lr=[1, 2, 3, 5]",
        "model.optimizer.alpha=[0.5, 0.9]",
        "model.l2=[0, 1e-4, 3e-4, 1e-3]",
    ],  # fmt: skip
    "own seed": ["seed_everything=[" + ", ".join(str(s) for s in range(32)) + "]"],
}


@contextlib.contextmanager
def compiled_seconds():
    """Within the block, the seconds spent in the native loop's compiled epochs
    (:func:`mlp_torch.train.native.epoch` wrapped by a timer): ``with compiled_seconds() as spent:
    ...; spent[0]``."""
    from mlp_torch.train import native

    spent, epoch = [0.0], native.epoch

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return epoch(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    native.epoch = timed
    try:
        yield spent
    finally:
        native.epoch = epoch


def speed_ratios(
    args: list[str] | None = None, grids: dict[str, list[str]] | None = None
) -> dict[str, float]:
    """Wall time of the training phase (``Trainer.fit``, not process start-up) of one
    ``mlp-torch fit ARGS`` and of each sweep of ``grids`` (default :data:`SPEED_GRIDS`) on the same
    ARGS, measured one after the other in this process, and each sweep's ratio to the fit; the
    part of each spent in the native loop's compiled epochs (``"... compiled"``); and the training
    phase of ``mlp-torch fit --config stochastic ARGS`` (per-example descent).

    A sweep's compiled epochs are its floor: its K members' updates, shared among the cores, take
    at least K / cores times one fit's (each member's epoch costs what one fit's does), so a sweep
    cannot come nearer to the fit than ``"... compiled"`` / ``"fit"`` whatever the rest costs.

    Returns ``{"fit": s, "fit compiled": s, "stochastic": s, "shared seed": s, "shared seed
    compiled": s, "shared seed ratio": r, ...}``.
    """
    from mlp_torch.cli.fit import make_cli
    from mlp_torch.cli.sweep import build_sweep, parse_grid

    args = [*(args or []), "--trainer.enable_progress_bar", "false"]
    grids = SPEED_GRIDS if grids is None else grids
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, compiled_seconds() as spent:
        with contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115 (Lightning's device lines)
            cli = make_cli(
                [*args, "--trainer.default_root_dir", tmp, "--trainer.logger.save_dir", tmp], run=False
            )
        started, spent[0] = time.perf_counter(), 0.0
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        out["fit"], out["fit compiled"] = time.perf_counter() - started, spent[0]
        out["fit epochs"] = cli.trainer.current_epoch
        with contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115
            stochastic = make_cli(["--config", str(ROOT / "configs" / "stochastic.yaml"), *args,
                                   "--trainer.default_root_dir", f"{tmp}/stochastic",
                                   "--trainer.logger.save_dir", f"{tmp}/stochastic"], run=False)  # fmt: skip
        started = time.perf_counter()
        stochastic.trainer.fit(stochastic.model, datamodule=stochastic.datamodule)
        out["stochastic"] = time.perf_counter() - started
        out["stochastic epochs"] = stochastic.trainer.current_epoch
        for name, specs in grids.items():
            sweep = build_sweep(args, parse_grid(specs), Path(tmp) / name.replace(" ", "_"))
            started, spent[0] = time.perf_counter(), 0.0
            sweep.trainer.fit(sweep.module, datamodule=sweep.datamodule)
            out[name], out[f"{name} compiled"] = time.perf_counter() - started, spent[0]
            out[f"{name} members"] = len(sweep.names)
            out[f"{name} epochs"] = sweep.trainer.current_epoch
            out[f"{name} ratio"] = out[name] / out["fit"]
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


PAGE = ROOT / "docs" / "performance.md"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", help="write the results as JSON here (a folder: FOLDER/<machine>.json)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["updates", "wide", "process", "sweep"])
    parser.add_argument("--markdown", type=Path, metavar="PAGE", help="rewrite the page's marked tables from "
                        "the JSON files they name (default: docs/performance.md when --out lies in "
                        "docs/performance/)")  # fmt: skip
    parser.add_argument(
        "--render", action="store_true", help="measure nothing, only rewrite the page's tables"
    )
    args = parser.parse_args(argv)
    page, out, folder = args.markdown, None, False
    if args.out:  # a folder (one that exists, or a name ending in /): the machine's file in it
        out, folder = Path(args.out), Path(args.out).is_dir() or args.out.endswith(("/", os.sep))
    if page is None and out is not None and out.resolve().is_relative_to(PAGE.with_suffix("")):
        page = PAGE
    if args.render:
        if page is None:
            parser.error("--render: which page? (--markdown PAGE)")
        print(f"{page}: the tables of {', '.join(rewrite_file(page))}")
        return 0
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    began = time.perf_counter()
    machine = describe_machine(device)
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else Path("python")
    results: dict = {
        "machine": machine, "command": shlex.join([str(python), "scripts/benchmark.py", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds,
    }  # fmt: skip
    if "updates" not in args.skip:
        results["per_update_us"] = per_update(args.rounds, device)
    if "wide" not in args.skip:
        results["wide"] = wide(args.rounds, device)
    if "process" not in args.skip:
        results["process_s"] = processes(args.rounds)
    if "sweep" not in args.skip:
        results["sweep_s"] = speed_ratios()
    results["benchmark_seconds"] = time.perf_counter() - began
    report(results)
    if out is not None:
        out = out / f"{machine_slug(machine)}.json" if folder else out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nwritten to {out}")
        if page is not None:
            add_table(page, out)
    if page is not None:
        print(f"{page}: the tables of {', '.join(rewrite_file(page))}")
    return 0


def per_update(rounds: int, device: str) -> dict:
    dm = MLPDataModule("digits", seed=0)
    x, y = dm.x_train, dm.y_train  # (1078, 64), (1078, 10) float32
    xn, yn, labels = x.numpy(), y.numpy(), dm.labels_train.numpy()
    xd, yd = x.to(device), y.to(device)
    torch.set_num_threads(choose_num_threads([64, 100, 10], 16))
    methods = {
        "C epoch (the limit)": lambda b, e: c_epoch_loop(xn, yn, b, e),
        "native epoch alone": lambda b, e: native_epoch_loop(xn, yn, b, e),
        "numpy": lambda b, e: numpy_loop(xn, yn, b, e),
        "torch plain": lambda b, e: torch_plain_loop(xd, yd, b, e, device),
        "torch autograd+SGD": lambda b, e: torch_autograd_loop(xd, yd, b, e, device),
        "sklearn": lambda b, e: sklearn_fit(xn, labels, b, e),
        "MLPModule lean manual": lambda b, e: module_lean(dm, b, e, "manual", device),
        "MLPModule lean torch loop": lambda b, e: module_lean(dm, b, e, "manual", device, native=False),
        "MLPModule lean autograd": lambda b, e: module_lean(dm, b, e, "autograd", device),
        "MLPModule shipped manual": lambda b, e: module_shipped(b, e, "manual", device),
        "MLPModule shipped autograd": lambda b, e: module_shipped(b, e, "autograd", device),
    }
    times: dict[str, dict[str, list[float]]] = {m: {str(b): [] for b in BATCHES} for m in methods}
    with threadpool_limits(1):  # numpy and scikit-learn by the same rule: one thread
        for r in range(rounds):
            for batch in BATCHES:
                for name, run in methods.items():
                    seconds, updates = run(batch, EPOCHS[batch])
                    times[name][str(batch)].append(1e6 * seconds / updates)
            print(f"round {r + 1}/{rounds} of the per-update table done", file=sys.stderr, flush=True)
    return {m: {b: summary(v) for b, v in per_batch.items()} for m, per_batch in times.items()}


def wide(rounds: int, device: str) -> dict:
    threads = choose_num_threads(WIDE, WIDE_BATCH)
    out: dict[str, list[float]] = {"torch.mm": [], "manual": [], "autograd": []}
    with tempfile.TemporaryDirectory() as folder:
        dm = wide_data(folder)
        for _ in range(rounds):
            for source in ("manual", "autograd"):
                seconds, updates = module_lean(dm, WIDE_BATCH, 3, source, device, sizes=WIDE)
                out[source].append(seconds / updates)
            torch.set_num_threads(threads)
            out["torch.mm"].append(wide_products_seconds(device, torch.float32, reps=5))
    mm = statistics.median(out["torch.mm"])
    return {
        "threads": threads,
        "seconds_per_update": {k: summary(v) for k, v in out.items()},
        "fraction_of_mm": {s: mm / statistics.median(out[s]) for s in ("manual", "autograd")},
    }


def processes(rounds: int) -> dict:
    out: dict[str, list[float]] = {"fit": [], "fit beside a busy process": [], "gradcheck": []}
    accuracies = []
    for _ in range(rounds):
        seconds, text = whole_process(["fit"])
        out["fit"].append(seconds)
        found = re.search(r"test/acc\s+([\d.]+)%", text)
        if found is None:
            raise RuntimeError(f"mlp-torch fit printed no test/acc: {text[-500:]}")
        accuracies.append(float(found.group(1)))
        out["fit beside a busy process"].append(whole_process(["fit"], busy=True)[0])
        out["gradcheck"].append(whole_process(["gradcheck"])[0])
    result = {k: summary(v) for k, v in out.items()}
    result["fit test/acc %"] = accuracies
    return result


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """Each target the results measure: (the target, what was measured, whether it is met)."""
    rows = []
    table = results.get("per_update_us")
    if table:
        for name, b, other, least in TARGETS:
            theirs, ours = table[other][str(b)]["median"], table[name][str(b)]["median"]
            speedup, how = theirs / ours, f"{least:g}x as fast as" if least > 1 else "as fast as"
            than = f"at least {how} {other}" if least >= 1 else f"within {1 / least:g}x of {other}"
            measured = f"{speedup:.2f}x ({ours:.1f} µs per update against {theirs:.1f})"
            rows.append((f"{name} at batch {b}: {than}", measured, speedup >= least))
    w = results.get("wide")
    if w:
        ms = {k: 1e3 * v["median"] for k, v in w["seconds_per_update"].items()}
        for source, frac in w["fraction_of_mm"].items():
            target = (
                f"wide {'-'.join(map(str, WIDE))} at batch {WIDE_BATCH}, {source}: >= 0.85 of torch.mm alone"
            )
            measured = (f"{frac:.2f} ({ms[source]:.1f} ms per update against {ms['torch.mm']:.1f} ms of "
                        f"products, {w['threads']} threads)")  # fmt: skip
            rows.append((target, measured, frac >= 0.85))
    p = results.get("process_s")
    if p:
        fit, busy, grad = (p[k]["median"] for k in ("fit", "fit beside a busy process", "gradcheck"))
        accuracies = ", ".join(f"{a:g} %" for a in sorted(set(p["fit test/acc %"])))
        rows += [
            ("`mlp-torch fit` (the default, whole process) <= 7 s", f"{fit:.1f} s (test/acc {accuracies})",
             fit <= 7),
            ("the same beside one busy process <= 2x", f"{busy:.1f} s = {busy / fit:.2f}x", busy / fit <= 2),
            ("`mlp-torch gradcheck` (whole process) <= 2.5 s", f"{grad:.2f} s", grad <= 2.5),
        ]  # fmt: skip
    sw = results.get("sweep_s")
    if sw:
        for name in ("shared seed", "own seed"):
            ratio, compiled = sw[f"{name} ratio"], sw.get(f"{name} compiled")
            floor = "" if compiled is None else (
                f"; its compiled epochs alone {compiled:.1f} s = {compiled / sw['fit']:.2f}x, one fit's "
                f"{sw['fit compiled']:.2f} s")  # fmt: skip
            rows.append((f"`mlp-torch sweep`, {sw[f'{name} members']} members, {name}: <= 4x one fit's "
                         f"training", f"{sw[name]:.1f} s = {ratio:.2f}x ({sw['fit']:.1f} s, "
                         f"{sw['fit epochs']} epochs){floor}", ratio <= 4))  # fmt: skip
        if "stochastic" in sw:
            rows.append(("`configs/stochastic.yaml`'s training <= 0.27 s (a tenth of the 2.7 s filed)",
                         f"{sw['stochastic']:.2f} s ({sw['stochastic epochs']} epochs, per example)",
                         sw["stochastic"] <= 0.27))  # fmt: skip
    return rows


def report(results: dict) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, PyTorch CPU capability {m['cpu_capability']}, native "
          f"loop for {m['native_cpu']}, torch {m['torch']}, device {m['device']}"
          f"{', ' + m['gpu'] if m['gpu'] else ''}; medians of {results['rounds']} rounds")  # fmt: skip
    table = results.get("per_update_us")
    if table:
        plain = table["torch plain"]
        print("\nmicroseconds per update (ratio to torch plain), digits 64-100-10")
        print(f"| {'way of training':<28} | " + " | ".join(f"batch {b}".ljust(16) for b in BATCHES) + " |")
        print(f"|{'-' * 30}|" + "|".join("-" * 18 for _ in BATCHES) + "|")
        for name, per_batch in table.items():
            cells = []
            for b in BATCHES:
                med, ref = per_batch[str(b)]["median"], plain[str(b)]["median"]
                cells.append(f"{med:8.1f} ({med / ref:4.2f}x)".ljust(16))
            print(f"| {name:<28} | " + " | ".join(cells) + " |")
    rows = targets(results)
    if rows:
        print("\ntargets (ratios of times measured side by side):")
        for target, measured, met in rows:
            print(f"  {target}: {measured} ({'met' if met else 'NOT met'})")
    print(f"\nbenchmark took {results['benchmark_seconds']:.0f} s")


# ---- the page: tables rendered from the JSON files ---------------------------------------------

MARKED = re.compile(r"(<!-- benchmark:(?P<json>\S+\.json) -->\n)(?P<body>.*?)(<!-- /benchmark -->)", re.S)


def _batch(b: str) -> str:
    return "full batch (1,078)" if b == "full" else f"batch {b}"


def markdown(results: dict, json_name: str) -> str:
    """One machine's results as the page shows them: the machine, command and date, the table of
    microseconds per update and the targets."""
    m = results["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    lines = [
        f"{m['cpu']} ({m['arch']}), {m['cores']} cores, PyTorch CPU capability {m['cpu_capability']}, "
        f"native loop compiled for {m['native_cpu']}; torch {m['torch']}, numba {m['numba']}, Python "
        f"{m['python']}; device {m['device']}{gpu}.",
        "",
        f"`{results['command']}` on {results['date']} ({results['benchmark_seconds']:.0f} s; each figure the "
        f"median of {results['rounds']}, the methods taking turns; raw JSON with min and max: "
        f"[{json_name}]({json_name})).",
    ]  # fmt: skip
    table = results.get("per_update_us")
    if table:
        plain = table["torch plain"]
        lines += ["", "Microseconds per update (ratio to `torch plain`), digits 64-100-10:", ""]
        lines.append("| way of training | " + " | ".join(_batch(str(b)) for b in BATCHES) + " |")
        lines.append("|---|" + "---|" * len(BATCHES))
        for name, per_batch in table.items():
            cells = []
            for b in BATCHES:
                med, ref = per_batch[str(b)]["median"], plain[str(b)]["median"]
                cells.append(f"{med:.1f} ({med / ref:.2f}x)" if math.isfinite(med) else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rows = targets(results)
    if rows:
        lines += ["", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {t} | {measured} | {'met' if met else 'not met'} |" for t, measured, met in rows]
    return "\n".join(lines)


def rewrite_page(text: str, folder: Path) -> str:
    """``text`` (a page in ``folder``) with each marked region ``<!-- benchmark:FILE.json -->`` ...
    ``<!-- /benchmark -->`` replaced by :func:`markdown` of FILE.json (relative to ``folder``)."""

    def one(found: re.Match) -> str:
        results = json.loads((folder / found["json"]).read_text())
        return found.group(1) + markdown(results, found["json"]) + "\n" + found.group(4)

    return MARKED.sub(one, text)


def marked_files(text: str) -> list[str]:
    """The JSON files whose tables ``text`` shows."""
    return [found["json"] for found in MARKED.finditer(text)]


def add_table(page: Path, written: Path) -> None:
    """Give the machine of ``written`` (a JSON file under the page's folder) a table at the end of
    ``page`` if the page has none for it."""
    if not written.resolve().is_relative_to(page.parent.resolve()):
        return
    name = written.resolve().relative_to(page.parent.resolve()).as_posix()
    text = page.read_text()
    if name not in marked_files(text):
        m = json.loads(written.read_text())["machine"]
        page.write_text(f"{text.rstrip()}\n\n## {m['cpu']}, {m['cores']} cores, {m['cpu_capability']}\n\n"
                        f"<!-- benchmark:{name} -->\n<!-- /benchmark -->\n")  # fmt: skip


def rewrite_file(page: Path) -> list[str]:
    """Rewrite ``page``'s marked tables from their JSON files (only if they changed); returns the
    files named."""
    text = page.read_text()
    new = rewrite_page(text, page.parent)
    if new != text:
        page.write_text(new)
    return marked_files(text)


if __name__ == "__main__":
    sys.exit(main())
