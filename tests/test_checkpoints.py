"""Checkpoint and run-folder trust (issue 8, and how a checkpoint carries its run, issue 9):
crafted malicious checkpoints (a marker file must not appear), allow-listed class paths, runs
under default_root_dir, last.ckpt every epoch, atomic writes under kills timed to a write with
TMPDIR on another file system, locked run folders, and commands that change nothing when refused.
Every run is a real subprocess of `mlp-torch` on tiny data."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mlp_torch.train.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    RunLock,
    RunLockedError,
    atomic_save,
)

QUIET = ["--trainer.enable_progress_bar", "false"]
XOR = ["--data.dataset", "xor", "--data.n_samples", "40", "--model.hidden_sizes", "[4]", *QUIET]


def cli(*args, cwd, env=None, **kw):
    cmd = [sys.executable, "-m", "mlp_torch.cli", *args]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=environ, **kw)


def one_line_error(proc, code=2):
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlp-torch:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def snapshot(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-epoch xor run: its folder and its last.ckpt's contents."""
    root = tmp_path_factory.mktemp("trained")
    proc = cli("fit", *XOR, "--trainer.max_epochs", "3", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    return root, torch.load(last, map_location="cpu", weights_only=True)


class Payload:
    """Pickles to a call of os.mkdir(marker): loading it with weights_only=False runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def malicious(state, path, marker):
    torch.save({**state, "payload": Payload(marker)}, path)


# ---- 8.1: no code ever runs from a checkpoint ---------------------------------------------------


@pytest.mark.parametrize("how", ["file", "hpc", "hpc_weights_only_false", "slurm"])
def test_no_code_runs_from_a_checkpoint(how, trained, tmp_path):
    marker = tmp_path / "PWNED"
    root = tmp_path / "root"
    root.mkdir()
    env = None
    if how == "file":
        malicious(trained[1], tmp_path / "evil.ckpt", marker)
        args = ["fit", "--ckpt_path", str(tmp_path / "evil.ckpt")]
    else:
        malicious(trained[1], root / "hpc_ckpt_1.ckpt", marker)
        args = ["test", "--ckpt_path", "hpc"] if how != "slurm" else ["fit"]
        if how == "hpc_weights_only_false":
            args += ["--weights_only", "false"]
        if how == "slurm":
            env = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "1"}
    proc = cli(*args, *XOR, "--trainer.default_root_dir", str(root), cwd=tmp_path, env=env)
    line = one_line_error(proc)
    assert "weights_only" in line or "not a readable checkpoint" in line, line
    assert not marker.exists()
    assert not (root / "lightning_logs").exists()


def test_lightning_loads_go_through_the_weights_only_reader(trained, tmp_path):
    """Lightning's own loading path (strategy -> CheckpointIO), asked for weights_only=False."""
    marker = tmp_path / "PWNED"
    malicious(trained[1], tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "evil.ckpt", weights_only=False)
    assert not marker.exists()


# ---- 8.2: class paths from a checkpoint are allow-listed; the command line wins ----------------


def test_checkpoint_class_path_outside_the_allow_list_is_refused(trained, tmp_path):
    state = trained[1]
    hp = {**state["hyper_parameters"], "optimizer": {"class_path": "this.Zen", "init_args": {}}}
    torch.save({**state, "hyper_parameters": hp}, tmp_path / "zen.ckpt")
    proc = cli("fit", "--ckpt_path", str(tmp_path / "zen.ckpt"), *QUIET, cwd=tmp_path)
    line = one_line_error(proc)
    assert "class_path 'this.Zen' is not allowed" in line
    assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr  # `this` was never imported
    assert not (tmp_path / "lightning_logs").exists()


def test_command_line_wins_over_the_checkpoint_and_config_records_it(tmp_path):
    sgd = [
        "--model.optimizer",
        "torch.optim.SGD",
        "--model.optimizer.lr",
        "0.1",
        "--model.optimizer.momentum",
        "0.5",
    ]
    proc = cli("fit", *XOR, *sgd, "--model.l2", "0.01", "--trainer.max_epochs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    resume = ["--model.optimizer.lr", "0.5", "--trainer.max_epochs", "4", *QUIET]
    proc = cli("fit", "--ckpt_path", "last", *resume, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((run / "config-resume-1.yaml").read_text())
    optimizer = config["model"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["momentum"] == 0.5
    assert optimizer["init_args"]["lr"] == 0.5  # the command line's, not the checkpoint's 0.1
    assert config["model"]["l2"] == 0.01 and config["data"]["dataset"] == "xor"  # the checkpoint's
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["optimizer"]["init_args"]["lr"] == 0.1
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    group = resumed["optimizer_states"][0]["param_groups"][0]
    assert group["lr"] == 0.5 and group["momentum"] == 0.5  # what really trained epochs 2-3
    assert resumed["hyper_parameters"]["optimizer"]["init_args"]["lr"] == 0.5


# ---- 8.3: runs under default_root_dir; last = the newest run under that root -------------------


def test_runs_go_under_default_root_dir_and_last_stays_there(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    common = [*XOR, "--trainer.max_epochs", "2"]
    assert cli("fit", *common, "--trainer.default_root_dir", str(a), cwd=tmp_path).returncode == 0
    assert cli("fit", *common, "--trainer.default_root_dir", str(b), cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B"]  # nothing in the working folder
    before_b = snapshot(b)
    proc = cli(
        "fit",
        "--ckpt_path",
        "last",
        "--trainer.max_epochs",
        "3",
        "--trainer.default_root_dir",
        str(a),
        *QUIET,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (a / "lightning_logs" / "version_0" / "config-resume-1.yaml").is_file()
    assert snapshot(b) == before_b
    proc = cli("fit", "--ckpt_path", "last", "--trainer.default_root_dir", str(tmp_path / "C"), cwd=tmp_path)
    assert "no run with a last.ckpt under" in one_line_error(proc)


# ---- 8.4 and 8.5: last.ckpt is the last epoch, written atomically; exact resume after kills ----


def test_last_ckpt_is_the_last_epoch_and_the_best_is_kept(tmp_path):
    # monitoring the constant rate: the best stays epoch 0, last.ckpt must still follow every epoch
    proc = cli(
        "fit",
        *XOR,
        "--trainer.max_epochs",
        "5",
        "--convergence.enabled",
        "false",
        "--checkpoint.monitor",
        "lr",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=0.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 4


def test_each_epoch_writes_last_once_and_best_only_when_better(tmp_path, monkeypatch):
    from mlp_torch.cli.fit import make_cli

    monkeypatch.chdir(tmp_path)
    saved = []
    save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, ckpt, path, **kw):
        saved.append((Path(path).name, ckpt["epoch"]))
        save(self, ckpt, path, **kw)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)
    args = [
        *XOR,
        "--trainer.max_epochs",
        "6",
        "--convergence.enabled",
        "false",
        "--checkpoint.last_every_seconds",
        "0",
    ]
    cli = make_cli(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    lasts = [epoch for name, epoch in saved if name == "last.ckpt"]
    bests = [epoch for name, epoch in saved if name.startswith("best-")]
    assert lasts == list(range(6))  # every epoch, once
    assert bests and len(set(bests)) == len(bests) and bests[0] == 0  # each new best, once
    assert len(saved) == len(lasts) + len(bests)


SCHEDULER = [
    "--model.lr_scheduler",
    "torch.optim.lr_scheduler.ExponentialLR",
    "--model.lr_scheduler.gamma",
    "0.99",
]
LONG = [
    *XOR,
    "--convergence.enabled",
    "false",
    "--model.batch_size",
    "4",
    *SCHEDULER,
    "--checkpoint.last_every_seconds",
    "0",
]  # every epoch: kills land during its writes


def kill_during_a_write(cwd, env, epochs, attempts=6):
    """Start fits and SIGKILL each the moment a checkpoint's temporary file appears; returns how
    many kills landed during a write (the temporary file was left behind)."""
    folder = cwd / "lightning_logs" / "version_0" / "checkpoints"
    landed = 0
    for attempt in range(attempts):
        args = ["fit", *LONG, "--trainer.max_epochs", str(epochs)] + (
            ["--ckpt_path", "last"] if attempt else []
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlp_torch.cli", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            names = os.listdir(folder) if folder.is_dir() else []
            if "last.ckpt" in names and any(n.endswith(".tmp") for n in names):  # rewriting last.ckpt
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            landed += any(n.endswith(".tmp") for n in os.listdir(folder))
            state = torch.load(folder / "last.ckpt", weights_only=True)  # never partial
            assert state["epoch"] < epochs
        if landed >= 1:
            break
    return landed


def test_kills_during_checkpoint_writes_with_tmpdir_elsewhere_then_exact_resume(tmp_path):
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    tmpdir = Path(os.environ.get("TMPDIR", "/tmp")) if shm is None else shm / f"mlp-torch-{os.getpid()}"
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    epochs = 150
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert kill_during_a_write(killed, env, epochs) >= 1
    proc = cli("fit", *LONG, "--trainer.max_epochs", str(epochs), "--ckpt_path", "last", cwd=killed, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = killed / "lightning_logs" / "version_0" / "checkpoints"
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]  # the resume removed the leftovers
    assert not list(tmpdir.glob("*"))  # nothing went through TMPDIR
    proc = cli("fit", *LONG, "--trainer.max_epochs", str(epochs), cwd=straight, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (
        torch.load(p / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
        for p in (straight, killed)
    )
    assert a["epoch"] == b["epoch"] == epochs - 1 and a["global_step"] == b["global_step"]
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    if shm is not None:
        tmpdir.rmdir()


def test_atomic_save_failure_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_save({"a": torch.ones(2)}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_save({"a": Unsaveable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoint_writes_in_the_background_keep_order_content_and_errors(tmp_path, monkeypatch):
    import mlp_torch.train.checkpoints as checkpoints

    write = checkpoints.atomic_write

    def slow_write(buffer, path):
        time.sleep(0.3)
        write(buffer, path)

    monkeypatch.setattr(checkpoints, "atomic_write", slow_write)
    io = AtomicCheckpointIO()
    weights = torch.zeros(3)
    io.save_checkpoint(
        {"state_dict": {"net.w": weights}, "pytorch-lightning_version": "2.6.6"}, tmp_path / "a.ckpt"
    )
    weights += 1  # training goes on: the checkpoint holds the values at its save
    assert not (tmp_path / "a.ckpt").exists()  # written in the background
    io.save_checkpoint(
        {"state_dict": {"net.w": weights}, "pytorch-lightning_version": "2.6.6"}, tmp_path / "b.ckpt"
    )
    assert io.load_checkpoint(tmp_path / "a.ckpt")["state_dict"]["net.w"].tolist() == [0.0, 0.0, 0.0]
    io.save_checkpoint(
        {"state_dict": {"net.w": weights}, "pytorch-lightning_version": "2.6.6"}, tmp_path / "a.ckpt"
    )
    io.remove_checkpoint(tmp_path / "a.ckpt")  # after a.ckpt's write, in order
    assert io.load_checkpoint(tmp_path / "b.ckpt")["state_dict"]["net.w"].tolist() == [
        1.0,
        1.0,
        1.0,
    ]  # a load waits
    assert not (tmp_path / "a.ckpt").exists()
    io.save_checkpoint(
        {"state_dict": {"net.w": weights}, "pytorch-lightning_version": "2.6.6"}, tmp_path / "hpc_ckpt_1.ckpt"
    )
    assert (tmp_path / "hpc_ckpt_1.ckpt").exists()  # a SLURM save before a requeue is waited for
    (tmp_path / "file").write_text("")
    io.save_checkpoint(
        {"state_dict": {"net.w": weights}, "pytorch-lightning_version": "2.6.6"}, tmp_path / "file" / "c.ckpt"
    )  # its folder is a file
    with pytest.raises(OSError):
        io.teardown()  # the end of training raises the write's error
    io.teardown()  # once


# ---- 8.6: a run folder is locked while a process trains in it ----------------------------------


def test_run_lock_names_the_holder(tmp_path):
    held = RunLock(tmp_path).acquire()
    try:
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import mlp_torch.train.checkpoints as c; c.RunLock({str(tmp_path)!r}).acquire()",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"is in use by pid {os.getpid()} on host" in child.stderr
    finally:
        held.release()
    RunLock(tmp_path).acquire().release()  # free again
    with pytest.raises(RunLockedError):  # flock is per open file: a second lock in one process fails too
        first = RunLock(tmp_path).acquire()
        try:
            RunLock(tmp_path).acquire()
        finally:
            first.release()


def test_two_resumes_of_one_run_at_once(trained, tmp_path):
    run = tmp_path / "lightning_logs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(trained[1], run / "checkpoints" / "last.ckpt")
    args = [
        "fit",
        "--ckpt_path",
        "last",
        "--trainer.max_epochs",
        "100000",
        "--convergence.enabled",
        "false",
        *QUIET,
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "mlp_torch.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / ".lock").is_file() or str(first.pid) not in (run / ".lock").read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = cli(*args, cwd=tmp_path)
        line = one_line_error(second)
        assert f"is in use by pid {first.pid} on host" in line
        assert not (run / "config-resume-2.yaml").exists()  # the second one wrote nothing
    finally:
        first.kill()
        first.wait()


# ---- 8.7: a refused command changes nothing; a resume appends its config ----------------------


def test_refused_resume_changes_nothing(trained, tmp_path):
    root = trained[0]
    before = snapshot(root)
    for bad in (
        ["--model.optimizer.lr", "-1"],
        ["--model.optimizer.alpha", "2"],
        ["--trainer.max_epochs", "2"],
    ):
        proc = cli("fit", "--ckpt_path", "last", *bad, *QUIET, cwd=root)
        one_line_error(proc)
        assert snapshot(root) == before, bad
    proc = cli("fit", *XOR, "--model.optimizer.lr", "-1", cwd=tmp_path)
    assert "learning rate" in one_line_error(proc)
    assert list(tmp_path.iterdir()) == []  # no empty version_N


# ---- 9.1-9.3: the checkpoint carries its run; results go with it; no untrained evaluation --------


def test_checkpoint_alone_rebuilds_its_run_and_results_go_with_it(tmp_path):
    proc = cli(
        "fit",
        *XOR,
        "--trainer.max_epochs",
        "30",
        "--model.optimizer.lr",
        "5",
        "--model.batch_size",
        "4",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    for sub in ("validate", "test", "predict"):
        proc = cli(sub, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *QUIET, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "dirpath has changed" not in proc.stdout + proc.stderr
        assert (run / sub).is_dir()
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    rows = (run / "predict" / "predictions.csv").read_text().splitlines()[1:]
    right = sum(r.split(",")[1] == r.split(",")[2] for r in rows)  # columns: row, predicted, target
    assert len(rows) == 8 and right >= 7, rows  # xor learned (chance: 4)
    proc = cli("predict", "--ckpt_path", "last", "--data.dataset", "iris", *QUIET, cwd=tmp_path)
    line = one_line_error(proc)
    assert "(trained on xor)" in line and "(data iris)" in line


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_without_a_checkpoint_is_refused(subcommand, tmp_path):
    line = one_line_error(cli(subcommand, *QUIET, cwd=tmp_path))
    assert f"{subcommand} needs --ckpt_path" in line and "untrained" in line
    assert list(tmp_path.iterdir()) == []
