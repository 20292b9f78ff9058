"""Trust, tried as a hostile user would: a checkpoint's stored paths never make `fit` remove or
write a file outside its run; a moved or copied run resumes in the folder it is in; crashes,
silent data errors and unclear messages become one line `mlp-torch: error: ...` and exit 2 with
nothing written; SIGTERM ends `fit` with a non-zero exit and a resumable `last.ckpt`.

Tiny data throughout. Where a process matters (a signal, a segfault, the deletion attack, the
gradient check's threads) the case is a real `mlp-torch` process; the others call its entry point,
`mlp_torch.cli.command:main`, in this process (each subprocess would add 5 s of importing Lightning)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mlp_torch.cli.command import main
from mlp_torch.data import MLPDataModule

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
    before = {p.name for p in folder.iterdir()}
    proc = cli("fit", "--ckpt_path", str(folder / "crafted.ckpt"), "--trainer.max_epochs", "6",
               "--convergence.enabled", "false", *QUIET, cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    if victim_kind == "file":
        assert victim.read_text() == "precious"
    else:
        assert (victim / "inner" / "data.txt").read_text() == "precious"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 5
    assert before <= {p.name for p in folder.iterdir()}  # nothing the run did not know of was removed


# ---- 2: a moved or copied run resumes where it is -----------------------------------------------


@pytest.mark.parametrize("how", ["copied", "renamed"])
def test_a_moved_or_copied_run_resumes_into_its_own_last_ckpt(trained, tmp_path, monkeypatch, how):
    import shutil

    root = copy_run(trained, tmp_path)
    runs = root / "lightning_logs"
    moved = runs / ("version_7" if how == "copied" else "my_run")
    if how == "copied":
        shutil.copytree(runs / "version_0", moved)
    else:
        (runs / "version_0").rename(moved)
    monkeypatch.chdir(root)
    assert main(["fit", "--ckpt_path", str(moved / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5",
                 "--convergence.enabled", "false", *QUIET]) == 0  # fmt: skip
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert "last-v1.ckpt" not in names and "last.ckpt" in names, names
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4
    assert (moved / "config-resume-1.yaml").is_file()
    # and `last` now means that run: the next resume continues from epoch 5
    assert main(["fit", "--ckpt_path", "last", "--trainer.max_epochs", "6", "--convergence.enabled", "false",
                 *QUIET]) == 0  # fmt: skip
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 5
    bests = [p.name for p in (moved / "checkpoints").iterdir() if p.name.startswith("best-")]
    assert len(bests) == 1, bests  # each older best was removed as a newer one came


# ---- 3, 4, 6: crashes, silent wrong data and unclear messages: one line, exit 2, nothing written


def write_inputs(folder: Path) -> None:
    """The hostile inputs, each named by the case that uses it."""
    rng = np.random.default_rng(0)
    np.savez(folder / "zero.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    images = {"x_train": rng.random((20, 2, 2)), "y_train": np.arange(20) % 2,
              "x_test": rng.random((6, 2, 2)), "y_test": np.arange(6) % 2}  # fmt: skip
    np.savez(folder / "nan_y.npz", **{**images, "y_train": np.r_[np.arange(19) % 2, np.nan]})
    np.savez(folder / "inf_y.npz", **{**images, "y_train": np.r_[np.inf, np.arange(19) % 2]})
    np.savez(
        folder / "shapes.npz",
        **{**images, "x_train": rng.random((20, 5, 7)), "x_test": rng.random((6, 7, 5))},
    )
    np.savez(folder / "mixed.npz", **{**images, "y_train": np.array(["a", "b"] * 10)})
    (folder / "dup.csv").write_text("y,b,y\n" + "".join(f"{i % 2},{i},{i % 3}\n" for i in range(30)))
    (folder / "recursive.yaml").write_text("model: &m\n  l1: 0.0\n  again: [*m]\n")
    (folder / "secret.csv").write_text("the-secret-first-line\n1\n2\n")
    os.mkfifo(folder / "fifo.csv")
    os.symlink("/dev/zero", folder / "zero.csv")
    os.symlink("loop.csv", folder / "loop.csv")


CASES = {  # case: (arguments, what the one line says)
    "threads": (["--model.num_threads", "1000000"], "num_threads=1000000 is more than the"),
    "zero rows": (["--data.dataset", "zero.npz"], "has no examples: its array 'x' has 0 rows"),
    "recursive yaml": (["--config", "recursive.yaml"], "a YAML alias refers to a value that contains it"),
    "precision": (["--trainer.precision", "16-mixed"], "--trainer.precision 16-mixed is not supported"),
    "nan y": (["--data.dataset", "nan_y.npz"], "array 'y_train' has a non-finite value in row 19"),
    "inf y": (["--data.dataset", "inf_y.npz"], "array 'y_train' has a non-finite value in row 0"),
    "image shapes": (
        ["--data.dataset", "shapes.npz"],
        "have shape (5, 7) but test examples ('x_test') (7, 5)",
    ),
    "text and numbers": (["--data.dataset", "mixed.npz"], "'y_train' holds text but 'y_test' numbers"),
    "duplicate header": (["--data.dataset", "dup.csv", "--data.target", "y"], "names two columns alike"),
    "linked dtype": (["--data.dtype", "float64"], "--data.dtype is set from --model.dtype"),
    "fifo": (
        ["--data.dataset", "fifo.csv", "--data.target", "y"],
        "is a FIFO (named pipe), not a regular file",
    ),
    "device": (["--data.dataset", "zero.csv", "--data.target", "y"], "is a device, not a regular file"),
    "link loop": (["--data.dataset", "loop.csv", "--data.target", "y"], "symbolic link that loops"),
    "file content": (["--data.dataset", "secret.csv", "--data.target", "y"], "has no column 'y'"),
}


def in_process_error(args: list[str], capsys) -> str:
    """``mlp-torch ARGS`` through its entry point (``mlp_torch.cli.command:main``) in this process:
    the one line it printed (exit code 2 asserted)."""
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mlp-torch:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(case, tmp_path, monkeypatch, capsys):
    """In this process (a refusal comes before anything is built; a new process would add only
    Lightning's import to each case), but for the thread count, whose symptom was a segfault."""
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    args, expected = CASES[case]
    args = ["fit", "--data.dataset", "iris", *args, *QUIET]
    if case == "threads":
        proc = cli(*args, cwd=tmp_path, timeout=120)
        line, out = one_line_error(proc), proc.stdout + proc.stderr
    else:
        line, out = in_process_error(args, capsys), ""
    assert expected in line, line
    assert "the-secret-first-line" not in line + out  # never a file's content
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--batch_size", "1000000000"], "give a smaller --batch_size"),
        (["--sizes", "[1000000, 1]"], "evaluates J twice for each of its 1,000,001 parameters"),
        (["--seed", str(2**70)], "seed=1180591620717411303424 is out of range"),
    ],
)
def test_gradcheck_refuses_what_it_cannot_do_in_one_line(args, expected, tmp_path):
    proc = cli("gradcheck", *args, cwd=tmp_path, timeout=60)
    assert expected in one_line_error(proc)


def test_gradcheck_follows_the_threads_rule(tmp_path):
    code = ("import torch, mlp_torch.cli.command as c; torch.set_num_threads(2); "
            "c.gradcheck(sizes=[4, 5, 3]); print('threads', torch.get_num_threads())")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("threads 1")


def test_integer_labels_are_read_exactly(tmp_path):
    """Labels above 2**53 stay three classes (they went through a float and merged), and labels
    beyond 64 bits (2**63, 2**63 + 1) stay two (kept as their digits)."""
    big = 2**53
    (tmp_path / "big.csv").write_text("a,y\n" + "".join(f"{i},{big + i % 3}\n" for i in range(30)))
    (tmp_path / "huge.csv").write_text("a,y\n" + "".join(f"{i},{2**63 + i % 2}\n" for i in range(30)))
    for name, classes in (("big.csv", 3), ("huge.csv", 2)):
        data = MLPDataModule(str(tmp_path / name), target="y")
        assert data.n_outputs == classes and len(data.classes) == classes


# ---- 5: exit codes and side effects ----------------------------------------------------------


def test_sigterm_during_fit_exits_non_zero_with_a_resumable_last_ckpt(tmp_path):
    args = ["fit", *XOR, "--trainer.max_epochs", "100000", "--convergence.enabled", "false"]
    proc = subprocess.Popen([sys.executable, "-m", "mlp_torch.cli", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15, err
    assert "mlp-torch: training stopped: terminated by SIGTERM" in err and "Traceback" not in err
    epoch = torch.load(last, weights_only=True)["epoch"]
    resumed = cli("fit", "--ckpt_path", "last", "--trainer.max_epochs", str(epoch + 3), *QUIET, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["epoch"] == epoch + 2


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model.optimizer.lr", "-1"], "Invalid learning rate: -1.0"),
        (["--data.dataset", "missing.csv", "--data.target", "y"], "does not exist"),
    ],
)
def test_print_config_prints_only_a_config_that_would_run(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *args, "--print_config"]) == 2
    out, err = capsys.readouterr()
    assert expected in err and out == "" and os.listdir(tmp_path) == []


def craft(trained, tmp_path, name: str, change) -> tuple[Path, Path]:
    """A copy of the trained run with ``change(state)`` applied to a copy of its last.ckpt saved
    as ``name``: (root, the crafted checkpoint)."""
    root = copy_run(trained, tmp_path)
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    state = torch.load(folder / "last.ckpt", weights_only=True)
    change(state)
    torch.save(state, folder / name)
    return root, folder / name


def _wrong_shape(state):
    state["optimizer_states"][0]["state"][0]["dw"] = torch.zeros(7)


def _garbage_loops(state):
    state["loops"]["fit_loop"] = "garbage"


def _missing_counter(state):
    del state["loops"]["fit_loop"]["epoch_loop.batch_progress"]


def _nan_weights(state):
    state["state_dict"]["net.layers.0.weight"][0, 0] = float("nan")


def _missing_bias(state):
    del state["state_dict"]["net.layers.1.bias"]


def _bad_callback(state):
    state["callbacks"]["ConvergenceStop"] = {"previous_J": "high", "count": 1}


@pytest.mark.parametrize(
    "subcommand, change, extra, expected",
    [
        ("fit", None, ["--model.optimizer", "mlp_torch.optim.HeavyBall", "--model.optimizer.lr", "0.1",
                       "--model.optimizer.alpha", "0.5"], "trained with mlp_torch.optim.Momentum, not"),
        ("fit", _wrong_shape, [], "its optimizer state does not fit this run's Momentum over 22 parameters"),
        ("fit", _garbage_loops, [], "its loop state has no mapping 'fit_loop'"),
        ("fit", _missing_counter, [], "fit_loop.epoch_loop.batch_progress is missing"),
        ("fit", _bad_callback, [], "the state of its ConvergenceStop cannot be restored"),
        ("predict", _nan_weights, [], "its weights are not finite (NaN or inf in net.layers.0.weight)"),
        ("predict", _missing_bias, [], "lack net.layers.1.bias, which the configured network has"),
    ],
    ids=["other optimizer", "wrong-shape state", "garbage loops", "missing counter", "bad callback",
         "nan weights", "missing tensor"],
)  # fmt: skip
def test_a_refused_checkpoint_leaves_the_run_byte_identical(
    trained, tmp_path, monkeypatch, capsys, subcommand, change, extra, expected
):
    root, ckpt = craft(trained, tmp_path, "crafted.ckpt", change or (lambda state: None))
    before = snapshot(root)
    monkeypatch.chdir(root)
    args = [subcommand, "--ckpt_path", str(ckpt), "--trainer.max_epochs", "6", *extra, *QUIET]
    assert expected in in_process_error(args, capsys)
    assert snapshot(root) == before


def test_a_second_predict_does_not_overwrite_the_first(trained, tmp_path, monkeypatch, capsys):
    root = copy_run(trained, tmp_path)
    folder = root / "lightning_logs" / "version_0" / "predict"
    monkeypatch.chdir(root)
    for _ in range(2):
        assert main(["predict", "--ckpt_path", "last", *QUIET]) == 0
    assert sorted(p.name for p in folder.glob("predictions*.csv")) == ["predictions-1.csv", "predictions.csv"]
    assert "predictions-1.csv" in capsys.readouterr().out
