"""Data-parallel training for real: `mlp-torch fit --trainer.strategy ddp` on 2 and 3 CPU
processes (gloo), against the one-process run of the same configuration.

Each DDP run adds tests/ddp_probe.py's RecordRank callback, so every rank saves its final weights
and the training examples its own updates used in each epoch. The runs are few and short (each
starts 2-3 Python processes): every test checks all it can on its runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlp_torch.cli import main

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN = 1079  # digits' default training split
COMMON = [
    "--model.dtype", "float64",
    "--trainer.enable_progress_bar", "false",
    "--trainer.callbacks+=tests.ddp_probe.RecordRank",
]  # fmt: skip


def ddp_fit(*args, devices: int, out: Path, cwd: Path) -> list[dict]:
    """Run `mlp-torch fit` on ``devices`` CPU processes; every rank's record, by rank."""
    cmd = [
        sys.executable, "-m", "mlp_torch.cli", "fit", *COMMON, f"--trainer.callbacks.out_dir={out}",
        "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", str(devices), *args,
    ]  # fmt: skip
    # tests.ddp_probe must be importable in the launched processes, which run in cwd
    path = [str(ROOT), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("mlp-torch fit: done") == 1, proc.stdout  # the summary printed once
    return [torch.load(out / f"rank{r}.pt") for r in range(devices)]


def one_process_fit(*args, out: Path, cwd: Path, monkeypatch) -> dict:
    cwd.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    assert main(["fit", *COMMON, f"--trainer.callbacks.out_dir={out}", *args]) == 0
    return torch.load(out / "rank0.pt")


def assert_each_example_once(records: list[dict], epoch: int) -> None:
    """The ranks' backprop used every training example of the epoch exactly once, each a share."""
    seen = [r["examples"][epoch] for r in records]
    assert sum(len(s) for s in seen) == N_TRAIN
    assert all(len(s) < N_TRAIN for s in seen)  # nobody computed the whole batch
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(N_TRAIN))


def assert_same_weights(records: list[dict], reference: dict) -> None:
    for r in records:
        assert r["world"] == len(records)
        assert torch.equal(r["flat"], records[0]["flat"])  # all ranks end identical
        torch.testing.assert_close(r["flat"], reference["flat"], rtol=0, atol=1e-10)
    for key in ("train_J", "val_J", "val_acc"):  # reduced over the ranks: the whole split's values
        assert records[0][key] == pytest.approx(reference[key], rel=1e-10, abs=1e-12), key


def test_mini_batch_manual_on_2_then_resumed_on_3_processes_is_the_one_process_run(tmp_path, monkeypatch):
    args = ["--model.batch_size", "16", "--model.grad_source", "manual",
            "--model.crosscheck_every_n_steps", "5"]  # fmt: skip
    first = ddp_fit(*args, "--trainer.max_epochs", "1", devices=2, out=tmp_path / "a", cwd=tmp_path)
    assert_each_example_once(first, epoch=0)
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]  # one run folder
    assert first[0]["max_rel_err"] == first[1]["max_rel_err"] < 1e-12  # the max over the ranks
    assert torch.equal(first[0]["flat"], first[1]["flat"])
    # resume under DDP, on a different number of processes: the result does not depend on it
    (last,) = tmp_path.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    resume = ["--trainer.max_epochs", "2", "--ckpt_path", str(last)]
    resumed = ddp_fit(*args, *resume, devices=3, out=tmp_path / "b", cwd=tmp_path)
    assert [len(r["examples"]) for r in resumed] == [1, 1, 1]  # epoch 1 only
    assert_each_example_once(resumed, epoch=0)
    ref = tmp_path / "ref"
    reference = one_process_fit(*args, "--trainer.max_epochs", "2", out=ref, cwd=ref, monkeypatch=monkeypatch)
    assert_same_weights(resumed, reference)


def test_batch_gradient_descent_autograd_on_3_processes_is_the_one_process_run(tmp_path, monkeypatch):
    args = ["--model.batch_size", "full", "--model.grad_source", "autograd", "--model.l1", "1e-4",
            "--trainer.max_epochs", "3"]  # fmt: skip
    records = ddp_fit(*args, devices=3, out=tmp_path / "ddp", cwd=tmp_path)
    for epoch in range(3):
        assert_each_example_once(records, epoch)
    assert [len(e) for e in records[0]["examples"]] == [N_TRAIN // 3] * 3
    reference = one_process_fit(*args, out=tmp_path / "ref", cwd=tmp_path / "ref", monkeypatch=monkeypatch)
    assert_same_weights(records, reference)


def test_batch_size_below_the_number_of_processes_is_one_line_exit_2(tmp_path):
    cmd = [sys.executable, "-m", "mlp_torch.cli", "fit", "--trainer.accelerator", "cpu", "--trainer.strategy",
           "ddp", "--trainer.devices", "3", "--model.batch_size", "2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("mlp-torch:")]
    assert "batch_size=2 is smaller than the 3 processes" in line
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before training


def test_a_sweep_on_2_processes_is_the_one_process_sweep(tmp_path, monkeypatch):
    """Each process its shard of every member's batch, one collective per update for all: the
    members' weights equal the one-process sweep's to 1e-10, each written once (rank 0)."""
    args = ["--data.dataset", "iris", "--model.dtype", "float64", "--model.hidden_sizes", "[6]",
            "--trainer.enable_progress_bar", "false", "--model.batch_size", "8", "--trainer.max_epochs", "4",
            "--convergence.enabled", "false",
            "--grid", "seed_everything=[0, 1]", "--grid", "model.l1=[0, 0.001]"]  # fmt: skip
    ddp = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    cmd = [sys.executable, "-m", "mlp_torch.cli", "sweep", *args, *ddp, "--sweep_dir", "ddp"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("mlp-torch sweep: 4 members") == 1  # the table printed once
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *args, "--sweep_dir", "one"]) == 0
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    for member in (p.name for p in (tmp_path / "one").iterdir() if p.is_dir()):
        ours, theirs = (torch.load(tmp_path / d / member / "checkpoints" / "last.ckpt", weights_only=True)
                        for d in ("ddp", "one"))  # fmt: skip
        assert ours["epoch"] == theirs["epoch"] == 3
        for key, value in theirs["state_dict"].items():
            torch.testing.assert_close(ours["state_dict"][key], value, rtol=0, atol=1e-10)
