"""CUDA end to end (skipped without a CUDA device; `scripts/gpu_check.sh` runs them on a GPU
machine): data, network, optimizer state and metrics on the device, the same float64 weights as
on the CPU, no host synchronization inside the update loop, the gradient check on CUDA."""

import subprocess
import sys
import warnings
from collections import Counter

import pytest
import torch
from lightning.pytorch import Callback

from mlp_torch.data import MLPDataModule
from mlp_torch.train.module import MLPModule
from tests.test_training import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def make(batch_size=16, dtype="float64"):
    dm = MLPDataModule("digits", dtype=dtype, seed=0)
    module = MLPModule(n_inputs=dm.n_features, n_outputs=dm.n_outputs, dtype=dtype, batch_size=batch_size,
                       histograms_every_n_epochs=0, crosscheck_every_n_steps=0)  # fmt: skip
    return dm, module


class _Devices(Callback):
    """Records, at the end of each training epoch, where every tensor of the run lives."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dm, opt = trainer.datamodule, pl_module.optimizers(use_pl_optimizer=False)
        state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        assert state, "the optimizer has no state"
        val = [v for k, v in trainer.callback_metrics.items() if k.startswith("val/")]
        assert val, "no validation metrics were logged before the epoch's end"
        tensors = [dm.x_train, dm.y_train, dm.x_val, pl_module.flat, pl_module.flat_grad, *state,
                   *pl_module.net.parameters(), *val]  # fmt: skip
        self.devices = {t.device.type for t in tensors}


def test_cuda_run_keeps_everything_on_the_device_and_equals_the_cpu_run_in_float64():
    dm, on_gpu = make()
    devices = _Devices()
    fit(dm, on_gpu, epochs=3, accelerator="gpu", callbacks=[devices])
    assert devices.devices == {"cuda"}
    dm, on_cpu = make()
    fit(dm, on_cpu, epochs=3, accelerator="cpu")
    for p_gpu, p_cpu in zip(on_gpu.net.parameters(), on_cpu.net.parameters()):
        torch.testing.assert_close(p_gpu.detach().cpu(), p_cpu.detach(), rtol=0, atol=1e-10)


def _host_syncs(batch_size: int) -> Counter:
    """Synchronizing CUDA calls during a 2-epoch fit, as counted by torch's sync debug mode,
    by the place in the code that made each."""
    dm, module = make(batch_size=batch_size, dtype="float32")
    dm.setup("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(dm, module, epochs=2, accelerator="gpu")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))


def test_no_host_sync_per_update():
    _host_syncs(batch_size=256)  # a first CUDA fit in this process also pays one-time set-up syncs
    # 68 updates per epoch against 5: the same synchronizations, so none is per update
    assert _host_syncs(batch_size=16) == _host_syncs(batch_size=256)


def test_gradcheck_on_cuda_in_float64():
    cmd = [sys.executable, "-m", "mlp_torch.cli", "gradcheck", "--device", "cuda", "--dtype", "float64",
           "--sizes", "[5, 7, 3]", "--l1", "0.01", "--l2", "0.02"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "FAIL" not in proc.stdout and "PASS" in proc.stdout and "cuda" in proc.stdout
