"""The `mlp-torch` command line, run for real: as a subprocess where exit codes and output matter,
in-process (main()) for the quick checks. TensorBoard event files are read back with
tensorboard's own event reader."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mlp_torch.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run(*args, cwd):
    cmd = [sys.executable, "-m", "mlp_torch.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(proc, code):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlp-torch:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_gradcheck_passes_on_a_healthy_network(tmp_path):
    proc = run(
        "gradcheck",
        "--sizes",
        "[3, 5, 4, 2]",
        "--cost",
        "cross_entropy",
        "--l1",
        "0.01",
        "--l2",
        "0.02",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("PASS") == 7 and "FAIL" not in out  # 6 parameters + the verdict
    assert "manual~autograd" in out and "layers.2.bias" in out


def test_gradcheck_bad_option_is_one_line_exit_2(tmp_path):
    line = one_line_error(run("gradcheck", "--sizes", "[3, -1, 2]", cwd=tmp_path), 2)
    assert "every layer size must be an integer >= 1, got -1" in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["gradcheck", "--dtype", "float16"], 'Parser key "dtype"'),
        (["gradcheck", "--bogus", "1"], "bogus"),
        (["gradcheck", "--cost", "hinge"], "Got value: hinge"),
        (["fit", "--model.l1", "-1"], "l1=-1.0 must be a finite number >= 0"),
        (["fit", "--model.batch_size", "0"], "batch_size=0 must be an integer >= 1"),
        (["fit", "--trainer.max_epochs", "many"], "max_epochs"),
        (["fit", "--data.dataset", "no_such_file.csv", "--data.target", "y"], "no_such_file.csv"),
        (["fit", "--model.hidden_sizes", "[0]"], "every layer size must be an integer >= 1, got 0"),
        (["fit", "--ckpt_path", "missing.ckpt"], "missing.ckpt: no such checkpoint file"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mlp-torch:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "lightning_logs").exists() or args[-1].endswith(".ckpt")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(config, capsys):
    assert main(["fit", "--config", str(config), "--print_config"]) == 0
    assert "class_path: mlp_torch.optim." in capsys.readouterr().out


def scalars(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_fit_writes_tensorboard_logs_and_a_summary(tmp_path):
    proc = run(
        "fit",
        "--data.dataset",
        "iris",
        "--trainer.max_epochs",
        "4",
        "--model.crosscheck_every_n_steps",
        "3",
        *QUIET,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in (
        "test/acc",
        "epochs    4 (reached max_epochs=4)",
        "wall time",
        "lightning_logs/version_0",
        "--logdir",
    ):
        assert expected in out, out
    log_dir = tmp_path / "lightning_logs" / "version_0"
    acc = scalars(log_dir)
    tags = acc.Tags()
    for tag in (
        "train/J",
        "train/cost",
        "train/l1",
        "train/l2",
        "val/J",
        "val/acc",
        "test/acc",
        "lr",
        "gradcheck/max_rel_err",
        "sparsity/layer_0",
        "diagnostics/J_rose",
    ):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("train/J")] == [0, 1, 2, 3]  # one point per epoch
    assert max(e.value for e in acc.Scalars("gradcheck/max_rel_err")) < 1e-4
    assert {"weights/layers.0.weight", "grads/layers.1.weight"} <= set(tags["histograms"])
    hparams = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(raw)
        for tag, raw in acc.PluginTagToContent("hparams").items()
    }
    assert "_hparams_/experiment" not in hparams  # TensorBoard builds it from all runs (test_hparams.py)
    assert {"hp/test_acc", "hp/val_acc", "hp/train_J"} <= set(tags["scalars"])
    assert {"lr", "alpha", "optimizer", "batch_size", "hidden_sizes", "cost"} <= set(
        hparams["_hparams_/session_start_info"].session_start_info.hparams
    )
    assert (log_dir / "config.yaml").is_file()
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()


def test_resume_with_ckpt_path_last_is_exact(tmp_path):
    common = ["--data.dataset", "wine", "--model.batch_size", "8", "--convergence.enabled", "false", *QUIET]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run("fit", *common, "--trainer.max_epochs", "4", cwd=tmp_path / "a").returncode == 0
    assert run("fit", *common, "--trainer.max_epochs", "2", cwd=tmp_path / "b").returncode == 0
    proc = run("fit", *common, "--trainer.max_epochs", "4", "--ckpt_path", "last", cwd=tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    ckpts = [
        p / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        for p in (tmp_path / "a", tmp_path / "b")
    ]
    straight, resumed = (torch.load(p, map_location="cpu", weights_only=True) for p in ckpts)
    assert straight["epoch"] == resumed["epoch"] and straight["global_step"] == resumed["global_step"]
    for name, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    assert not (tmp_path / "b" / "lightning_logs" / "version_1").exists()  # logs continue in version_0


def test_non_finite_j_stops_with_exit_1_and_keeps_the_last_checkpoint(tmp_path):
    proc = run(
        "fit",
        "--data.dataset",
        "iris",
        "--model.batch_size",
        "full",
        "--model.l2",
        "1",
        "--model.optimizer.lr",
        "1e15",
        "--trainer.max_epochs",
        "20",
        *QUIET,
        cwd=tmp_path,
    )
    line = one_line_error(proc, 1)
    assert "training J became non-finite at update" in line and "learning rate 1e+15" in line
    assert "training J rose from" in proc.stderr  # the warning came first
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_default_config_file_is_the_default(capsys):
    """configs/default.yaml spells out exactly what `mlp-torch fit` does with no arguments."""
    import yaml

    def resolved(*args):
        assert main(["fit", *args, "--print_config"]) == 0
        config = yaml.safe_load(capsys.readouterr().out)
        return {k: config[k] for k in ("seed_everything", "model", "data", "convergence")}

    assert resolved() == resolved("--config", str(ROOT / "configs" / "default.yaml"))


def test_default_digits_accuracy_over_three_seeds():
    """The headline run of docs/results.md: the default's test accuracy over seeds 0, 1, 2 (measured:
    97.49%, 97.21%, 98.05%). The issue's target, a median >= 97.5%, is one digit out of 359 above
    that and is not met (see docs/results.md); this guards the level actually reached."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from seeds import run_seed

    accs = sorted(run_seed(seed, [])["test/acc"] for seed in (0, 1, 2))
    assert accs[0] >= 0.97 and accs[1] >= 0.974, accs


def test_cross_validation_script_reports_paired_folds(tmp_path):
    """scripts/cv.py on iris: two setups on the same folds, per-seed lines and the paired line;
    it writes nothing where it runs."""
    cmd = [sys.executable, str(ROOT / "scripts" / "cv.py"), "--seeds", "1", "--folds", "3", "--jobs", "1",
           "--versus", "--data.dataset iris --trainer.max_epochs 1",
           "--", "--data.dataset", "iris", "--trainer.max_epochs", "30"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
    scores = [float(m) for m in re.findall(r"mean held-out score ([0-9.]+)", out.stdout)]
    assert len(scores) == 2 and scores[0] > scores[1] and scores[0] > 0.8, out.stdout
    assert "seed 1: mean" in out.stdout and "epochs 30 30 30" in out.stdout
    assert "A - B: +" in out.stdout and "A better on" in out.stdout


def test_cross_validation_script_bad_input_is_one_line_exit_2(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "cv.py"), "--seeds", "0", "--folds", "2", "--jobs", "1",
           "--", "--data.dataset", "nope"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("cv.py: error: dataset='nope' is not known")


def test_validate_test_predict_from_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--data.dataset", "iris", *QUIET]
    assert main(["fit", *common, "--trainer.max_epochs", "2"]) == 0
    for sub in ("validate", "test"):
        assert main([sub, *common, "--ckpt_path", "last"]) == 0
    assert main(["predict", *common, "--ckpt_path", "last"]) == 0
    written = sorted(tmp_path.glob("lightning_logs/version_*/predict/predictions.csv"))
    assert len(written) == 1 and "predictions of the test split written to" in capsys.readouterr().out
    rows = written[0].read_text().splitlines()
    assert rows[0] == "row,predicted,target,p_setosa,p_versicolor,p_virginica" and len(rows) == 1 + 30
    assert {r.split(",")[1] for r in rows[1:]} <= {"setosa", "versicolor", "virginica"}
    capsys.readouterr()
    # an iris checkpoint does not fit the digits network: one line, exit 2, nothing written
    before = sorted(tmp_path.rglob("*"))
    ckpt = "lightning_logs/version_0/checkpoints/last.ckpt"
    assert main(["test", "--ckpt_path", ckpt, "--data.dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "its network has sizes [4, 100, 3] (trained on iris), the configured one [64, 100, 10]" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"not a checkpoint", "not a readable checkpoint (UnpicklingError)"),
        (None, "not an mlp-torch checkpoint"),
    ],
)
def test_bad_checkpoint_file_is_one_line_exit_2(content, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.ckpt"
    if content is None:
        torch.save({"epoch": 3}, path)
    else:
        path.write_bytes(content)
    assert main(["fit", "--ckpt_path", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert expected in lines[-1] and not (tmp_path / "lightning_logs").exists()


def test_gradcheck_exits_1_on_a_wrong_gradient(monkeypatch, capsys):
    from mlp_torch.model.costs import QuadraticCost

    monkeypatch.setattr(QuadraticCost, "delta", staticmethod(lambda z, a, y: a - y))  # no f'(z)
    assert main(["gradcheck", "--sizes", "[3, 4, 2]"]) == 1
    out = capsys.readouterr().out
    assert "FAIL layers.1.weight: manual_vs_autograd relative error" in out
