"""Trust, tried as a hostile user would: a checkpoint's stored paths never make `fit` remove or
write a file outside its run; a moved or copied run resumes in the folder it is in; crashes,
silent data errors and unclear messages become one line `mlp-torch: error: ...` and exit 2 with
nothing written; SIGTERM ends `fit` with a non-zero exit and a resumable `last.ckpt`. Every case
is a real `mlp-torch` process on tiny data."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

QUIET = ["--trainer.enable_progress_bar", "false"]
XOR = ["--data.dataset", "xor", "--data.n_samples", "40", "--model.hidden_sizes", "[4]", *QUIET]


def cli(*args, cwd, timeout=300, **kw):
    cmd = [sys.executable, "-m", "mlp_torch.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def one_line_error(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlp-torch:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-epoch xor run under ``<tmp>/root``: (root, its run folder)."""
    root = tmp_path_factory.mktemp("trained") / "root"
    root.mkdir()
    proc = cli("fit", *XOR, "--trainer.max_epochs", "3", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, root / "lightning_logs" / "version_0"


def copy_run(trained, to: Path) -> Path:
    """A copy of the trained run in ``to/root`` (the same relative layout)."""
    import shutil

    root = to / "root"
    shutil.copytree(trained[0], root)
    return root


# ---- 1: a checkpoint's stored paths never remove a file outside its run ------------------------


@pytest.mark.parametrize("victim_kind", ["file", "folder"])
def test_a_checkpoints_stored_paths_cannot_remove_files_outside_its_run(trained, tmp_path, victim_kind):
    root = copy_run(trained, tmp_path)
    run = root / "lightning_logs" / "version_0"
    folder = run / "checkpoints"
    victim = tmp_path / "victim"  # <dirpath>/../../../../victim
    if victim_kind == "file":
        victim.write_text("precious")
    else:
        (victim / "inner").mkdir(parents=True)
        (victim / "inner" / "data.txt").write_text("precious")
    attack = str(folder / ".." / ".." / ".." / ".." / "victim")
    assert Path(os.path.realpath(attack)) == victim
    state = torch.load(folder / "last.ckpt", weights_only=True)
    (key,) = [k for k in state["callbacks"] if k.startswith("EpochCheckpoint")]
    score = torch.tensor(-1.0)
    state["callbacks"][key].update(
        last_model_path=attack, best_model_path=attack, kth_best_model_path=attack,
        best_k_models={attack: score}, best_model_score=score, kth_value=score,
    )  # fmt: skip
    torch.save(state, folder / "crafted.ckpt")
    proc = cli("fit", "--ckpt_path", str(folder / "crafted.ckpt"), "--trainer.max_epochs", "6",
               "--convergence.enabled", "false", *QUIET, cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    if victim_kind == "file":
        assert victim.read_text() == "precious"
    else:
        assert (victim / "inner" / "data.txt").read_text() == "precious"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 5


# ---- 2: a moved or copied run resumes where it is -----------------------------------------------


@pytest.mark.parametrize("how", ["copied", "renamed"])
def test_a_moved_or_copied_run_resumes_into_its_own_last_ckpt(trained, tmp_path, how):
    import shutil

    root = copy_run(trained, tmp_path)
    runs = root / "lightning_logs"
    moved = runs / ("version_7" if how == "copied" else "my_run")
    if how == "copied":
        shutil.copytree(runs / "version_0", moved)
    else:
        (runs / "version_0").rename(moved)
    proc = cli("fit", "--ckpt_path", str(moved / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5",
               "--convergence.enabled", "false", *QUIET, cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert "last-v1.ckpt" not in names and "last.ckpt" in names, names
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4
    assert (moved / "config-resume-1.yaml").is_file()
    # and `last` now means that run: the next resume continues from epoch 5
    proc = cli("fit", "--ckpt_path", "last", "--trainer.max_epochs", "6", "--convergence.enabled", "false",
               *QUIET, cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 5
