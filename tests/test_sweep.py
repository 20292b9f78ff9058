"""`mlp-torch sweep`: each member equals its own `mlp-torch fit`, a diverging member is frozen
while the others finish, the grid's bad input is one line and exit 2. Real runs, float64."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlp_torch.cli import main, make_cli
from mlp_torch.cli.sweep import parse_grid

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
IRIS = ["--data.dataset", "iris", "--model.dtype", "float64", "--model.hidden_sizes", "[5]", *QUIET]


def fit_weights(args: list[str], folder: Path) -> dict[str, torch.Tensor]:
    """The weights at the end of training of `mlp-torch fit ARGS` (built by the same CLI; read
    from the module: Lightning writes last.ckpt only in epochs where val/J improved)."""
    cli = make_cli([*args, "--trainer.default_root_dir", str(folder), "--trainer.logger", "false"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {f"net.{k}": v for k, v in cli.model.net.state_dict().items()}


def assert_same_weights(sweep_ckpt: Path, theirs: dict[str, torch.Tensor], rtol: float = 0.0) -> None:
    ours = torch.load(sweep_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=rtol, atol=1e-10, msg=name)


def test_each_member_equals_its_own_fit(tmp_path, monkeypatch, capsys):
    """2 rates x 3 seeds (own split, own weights, own shuffle order), momentum, L2, mini-batches."""
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "16", "--trainer.max_epochs", "4", "--convergence.enabled", "false"]
    grid = ["--grid", "model.optimizer.lr=[0.5, 2]", "--grid=seed_everything=[0, 1, 2]"]
    assert main(["sweep", *args, *grid, "--sweep_dir", "sw"]) == 0
    out = capsys.readouterr().out
    names = [f"lr={lr},seed_everything={seed}" for lr in (0.5, 2) for seed in (0, 1, 2)]
    with open(tmp_path / "sw" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["member"] for r in rows) == sorted(names)
    accs = [float(r["val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)  # best first
    assert rows[0]["test/acc"] and not any(r["test/acc"] for r in rows[1:])  # test figures of the best only
    assert "best" in out and "not used to choose" in out and rows[0]["member"] in out
    for lr in (0.5, 2):
        for seed in (0, 1, 2):
            name = f"lr={lr},seed_everything={seed}"
            alone = fit_weights(
                [*args, "--model.optimizer.lr", str(lr), "--seed_everything", str(seed)], tmp_path / name
            )
            assert_same_weights(tmp_path / "sw" / name / "checkpoints" / "last.ckpt", alone)
    # one TensorBoard run per member, named by its settings, with its J curve
    events = EventAccumulator(str(tmp_path / "sw" / names[0]))
    events.Reload()
    assert {"train/J", "val/J", "val/acc"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/J")] == [0, 1, 2, 3]


def test_a_member_rerun_from_its_config_is_that_member(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "full", "--trainer.max_epochs", "3"]
    assert main(["sweep", *args, "--grid", "model.l2=[0, 0.01]", "--sweep_dir", "sw"]) == 0
    member = tmp_path / "sw" / "l2=0.01"
    assert_same_weights(
        member / "checkpoints" / "last.ckpt", fit_weights(["--config", str(member / "config.yaml")], tmp_path)
    )


def test_a_diverging_member_is_frozen_while_the_others_finish(tmp_path, monkeypatch, capsys):
    """lr 1e15 makes J non-finite (`fit` stops with exit 1); the sweep keeps that member at its
    weights from before the epoch where J became non-finite, a `fit` of that many epochs, and
    trains the other to the end."""
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "full", "--model.l2", "1", "--trainer.max_epochs", "14",
            "--convergence.enabled", "false"]  # fmt: skip
    assert main(["sweep", *args, "--grid", "model.optimizer.lr=[0.5, 1e15]", "--sweep_dir", "sw"]) == 0
    out = capsys.readouterr().out
    rows = {r["member"]: r for r in csv.DictReader(open(tmp_path / "sw" / "results.csv"))}
    assert rows["lr=0.5"]["status"] == "max_epochs" and rows["lr=0.5"]["epochs"] == "14"
    assert rows["lr=1e15"]["status"] == "diverged" and int(rows["lr=1e15"]["epochs"]) < 14
    assert "lr=1e15: training J became non-finite in epoch" in out
    assert rows["lr=0.5"]["rank"] == "1"
    assert main(["fit", *args, "--model.optimizer.lr", "1e15"]) == 1
    epochs = rows["lr=1e15"]["epochs"]
    assert f"non-finite at update {int(epochs) + 1} (epoch {epochs}," in capsys.readouterr().err
    alone = fit_weights(
        [*args, "--model.optimizer.lr", "1e15", "--trainer.max_epochs", epochs], tmp_path / "a"
    )
    # its weights are ~1e150 by then: equal to 1e-10 relative
    assert_same_weights(tmp_path / "sw" / "lr=1e15" / "checkpoints" / "last.ckpt", alone, rtol=1e-10)
    alone = fit_weights([*args, "--model.optimizer.lr", "0.5"], tmp_path / "b")
    assert_same_weights(tmp_path / "sw" / "lr=0.5" / "checkpoints" / "last.ckpt", alone)


@pytest.mark.parametrize(
    "grid, expected",
    [
        (["--grid", "model.optimizer.lr"], "write KEY=[v1, v2, ...]"),
        (["--grid", "model.optimizer.lr=0.3"], "must be a non-empty list"),
        (["--grid", "model.optimizer.lr=[]"], "must be a non-empty list"),
        (["--grid", "model.optimizer.lr=[0.3, 1"], "the values are not YAML"),
        (["--grid", "model.l2=[0, 1]", "--grid", "model.l2=[2]"], "model.l2 is already swept"),
        (["--grid", "model.l2=[1, 1]"], "the values of model.l2 repeat"),
        (["--grid", "=[1, 2]"], "is not a setting's name"),
        (["--grid", "missing.yaml"], "cannot read the grid file"),
        ([], "give at least one --grid"),
        (["--grid"], "--grid needs a value"),
        (["--grid", "model.no_such_option=[1, 2]"], "no_such_option"),
        (
            ["--grid", "model.hidden_sizes=[[3], [4]]"],
            "model.hidden_sizes is [3] in member hidden_sizes=[3] but [4]",
        ),
        (["--grid", "model.batch_size=[4, 8]"], "model.batch_size is 4 in member batch_size=4 but 8"),
    ],
)
def test_grid_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, grid, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--data.dataset", "iris", *grid]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mlp-torch:")]
    assert len(errors) == 1 and errors[0].startswith("mlp-torch: error: "), err
    assert expected in errors[0] and "Traceback" not in err
    assert not (tmp_path / "lightning_logs").exists()  # nothing written


def test_grid_bad_input_from_the_command_line(tmp_path):
    cmd = [sys.executable, "-m", "mlp_torch.cli", "sweep", "--grid", "model.optimizer.lr=[0.3, 1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("mlp-torch: error: --grid model.optimizer.lr=[0.3, 1:")
    )


def test_grid_from_a_yaml_file(tmp_path):
    (tmp_path / "grid.yaml").write_text("model.optimizer.lr: [0.3, 1]\nmodel.optimizer.alpha: [0.0, 0.9]\n")
    grid = parse_grid([str(tmp_path / "grid.yaml"), "seed_everything=[0, 1]"])
    assert list(grid.axes) == ["model.optimizer.lr", "model.optimizer.alpha", "seed_everything"]
    assert len(grid.members) == 8
    assert grid.name(grid.members[-1]) == "lr=1,alpha=0.9,seed_everything=1"


def test_a_converged_member_stops_where_its_fit_stops(tmp_path, monkeypatch, capsys):
    """A member whose J stops changing is frozen (its learning rate set to 0) at the epoch where
    `fit`'s ConvergenceStop stops, with the weights of that fit, while the other trains on."""
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "16", "--trainer.max_epochs", "12",
            "--convergence.threshold", "0.02", "--convergence.patience", "2"]  # fmt: skip
    assert main(["sweep", *args, "--grid", "model.optimizer.lr=[0.05, 3]", "--sweep_dir", "sw"]) == 0
    rows = {r["member"]: r for r in csv.DictReader(open(tmp_path / "sw" / "results.csv"))}
    assert rows["lr=0.05"]["status"] == "converged" and int(rows["lr=0.05"]["epochs"]) < 12
    assert rows["lr=3"]["status"] != "converged" or int(rows["lr=3"]["epochs"]) > int(
        rows["lr=0.05"]["epochs"]
    )
    for lr in ("0.05", "3"):
        alone = fit_weights([*args, "--model.optimizer.lr", lr], tmp_path / lr)
        assert_same_weights(tmp_path / "sw" / f"lr={lr}" / "checkpoints" / "last.ckpt", alone)


def test_scalar_events_read_back_in_tensorboard(tmp_path):
    from mlp_torch.train.events import RunEvents

    events = RunEvents(tmp_path / "run")
    for step in range(3):
        events.add({"train/J": 1.0 / (step + 1), "val/acc": 0.5 + step / 10}, step=step)
    events.flush()
    events.close()
    read = EventAccumulator(str(tmp_path / "run"))
    read.Reload()
    assert [(e.step, round(e.value, 6)) for e in read.Scalars("train/J")] == [
        (0, 1.0),
        (1, 0.5),
        (2, 0.333333),
    ]
    assert [round(e.value, 6) for e in read.Scalars("val/acc")] == [0.5, 0.6, 0.7]


# ---- one engine: every feature of fit works in a sweep, per member ------------------------------

SCHEDULE = [
    "--model.lr_scheduler",
    "torch.optim.lr_scheduler.ExponentialLR",
    "--model.lr_scheduler.gamma",
    "0.9",
]


def member_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(folder / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]


def test_a_scheduled_sweep_equals_its_fits_with_the_schedules_settings_swept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "8", "--trainer.max_epochs", "5", "--convergence.enabled", "false",
            *SCHEDULE]  # fmt: skip
    grid = ["--grid", "model.lr_scheduler.gamma=[0.5, 0.95]", "--grid", "model.optimizer.lr=[1, 3]"]
    assert main(["sweep", *args, *grid, "--sweep_dir", "sw"]) == 0
    for gamma in ("0.5", "0.95"):
        for lr in ("1", "3"):
            alone = fit_weights([*args, "--model.lr_scheduler.gamma", gamma, "--model.optimizer.lr", lr],
                                tmp_path / f"{gamma}-{lr}")  # fmt: skip
            assert_same_weights(
                tmp_path / "sw" / f"gamma={gamma},lr={lr}" / "checkpoints" / "last.ckpt", alone
            )


def test_a_cross_checked_sweep_logs_each_members_error_and_names_the_member_that_fails(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = [
        *IRIS,
        "--model.batch_size",
        "full",
        "--trainer.max_epochs",
        "3",
        "--model.crosscheck_every_n_steps",
        "1",
    ]
    assert main(["sweep", *args, "--grid", "model.l1=[0, 0.01]", "--sweep_dir", "sw"]) == 0
    for name in ("l1=0", "l1=0.01"):
        events = EventAccumulator(str(tmp_path / "sw" / name))
        events.Reload()
        errors = [e.value for e in events.Scalars("gradcheck/max_rel_err")]
        assert len(errors) == 3 and max(errors) < 1e-10
    assert main(["fit", *args, "--model.l1", "0.01"]) == 0
    tight = ["--model.crosscheck_tolerance", "1e-300", "--model.crosscheck_action", "error"]
    assert main(["sweep", *args, *tight, "--grid", "model.l1=[0, 0.01]", "--sweep_dir", "sw2"]) == 1
    assert "member l1=0: hand-written and autograd gradients disagree" in capsys.readouterr().err


def test_a_streamed_sweep_equals_the_one_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "4", "--trainer.max_epochs", "3", "--convergence.enabled", "false"]
    grid = ["--grid", "seed_everything=[0, 1]", "--grid", "model.optimizer.lr=[0.5, 2]"]
    assert main(["sweep", *args, *grid, "--sweep_dir", "memory"]) == 0
    streamed = ["--data.streaming", "on", "--data.memory_budget_mb", "0.001"]  # a few rows per chunk
    assert main(["sweep", *args, *streamed, *grid, "--sweep_dir", "streamed"]) == 0
    for name in ("seed_everything=0,lr=0.5", "seed_everything=1,lr=2"):
        ours = member_weights(tmp_path / "streamed", name)
        for key, value in member_weights(tmp_path / "memory", name).items():
            torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-10)


def test_an_existing_sweep_folder_is_refused_and_left_as_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--trainer.max_epochs", "2", "--grid", "model.l2=[0, 0.001]", "--sweep_dir", "sw"]
    assert main(["sweep", *args]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "sw").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err
    assert "mlp-torch: error: --sweep_dir sw holds a sweep already" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in (tmp_path / "sw").rglob("*") if p.is_file()} == before


def test_a_members_checkpoints_are_fit_checkpoints(tmp_path, monkeypatch, capsys):
    """predict from a member's best.ckpt; fit --ckpt_path MEMBER/last.ckpt continues that member
    alone, exactly as its own fit resumed would."""
    monkeypatch.chdir(tmp_path)
    args = [*IRIS, "--model.batch_size", "8", "--convergence.enabled", "false", *SCHEDULE]
    assert main(["sweep", *args, "--trainer.max_epochs", "3", "--grid", "model.optimizer.lr=[0.5, 2]",
                 "--sweep_dir", "sw"]) == 0  # fmt: skip
    member = tmp_path / "sw" / "lr=2"
    assert main(["predict", "--ckpt_path", str(member / "checkpoints" / "best.ckpt"), *QUIET]) == 0
    rows = (member / "predict" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("row,predicted,target,p_setosa") and len(rows) == 31
    assert main(["fit", "--ckpt_path", str(member / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5",
                 *QUIET]) == 0  # fmt: skip
    assert (member / "config-resume-1.yaml").is_file()
    straight = fit_weights(
        [*args, "--model.optimizer.lr", "2", "--trainer.max_epochs", "5"], tmp_path / "alone"
    )
    assert_same_weights(member / "checkpoints" / "last.ckpt", straight)


def test_a_killed_sweep_resumed_with_ckpt_path_last_is_bit_identical(tmp_path):
    """SIGKILL in the middle of a sweep whose members stop at different epochs (one has converged
    by then), then --ckpt_path last: every member's final weights equal an uninterrupted sweep's,
    bit for bit, and so do their stops and the table."""
    import os
    import signal
    import time

    schedule = [
        "--model.lr_scheduler",
        "torch.optim.lr_scheduler.ExponentialLR",
        "--model.lr_scheduler.gamma",
        "0.99",
    ]
    stops = ["--convergence.threshold", "0.001", "--checkpoint.last_every_seconds", "0"]  # every epoch
    grid = ["--grid", "model.optimizer.lr=[0.05, 0.5, 3]"]  # they stop at epochs 171, 280 and 300
    args = [*IRIS, "--model.batch_size", "4", "--trainer.max_epochs", "300", *schedule, *stops, *grid]
    cmd = [sys.executable, "-m", "mlp_torch.cli", "sweep", *args]
    straight = subprocess.run([*cmd, "--sweep_dir", "straight"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]

    def kill_after_the_first_stop(folder: str):
        """Start the sweep into ``folder`` and SIGKILL it once its last.ckpt is past epoch 175 (the first
        member converged at 171, the others train on); None when the run ended first (a fast machine)."""
        killed = subprocess.Popen([*cmd, "--sweep_dir", folder], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        last, deadline, at = tmp_path / folder / "last.ckpt", time.monotonic() + 120, None
        while killed.poll() is None and time.monotonic() < deadline:
            if last.is_file():
                state = torch.load(last, weights_only=True)
                if state["epoch"] >= 175:
                    os.kill(killed.pid, signal.SIGKILL)
                    at = state
                    break
            time.sleep(0.002)
        killed.wait()
        return at if killed.returncode == -signal.SIGKILL and at["epoch"] < 298 else None

    # the kill races the run's end; polling every epoch's checkpoint wins on any machine seen so far,
    # and each retry is a new folder, so a lost race costs one more run and never a wrong verdict
    folder, at = next((f, a) for f in ("killed", "killed2", "killed3", "killed4")
                      if (a := kill_after_the_first_stop(f)) is not None)  # fmt: skip
    assert "converged" in {s["stopped"] for s in at["members"]["status"]}  # a stopped member is resumed
    resumed = subprocess.run([*cmd, "--sweep_dir", folder, "--ckpt_path", "last"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(tmp_path / d / "last.ckpt", weights_only=True) for d in ("straight", folder))
    assert a["epoch"] == b["epoch"] == 299
    assert a["members"]["status"] == b["members"]["status"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    rows = [line.split(",")[:5] for line in (tmp_path / folder / "results.csv").read_text().splitlines()]
    assert rows == [
        line.split(",")[:5] for line in (tmp_path / "straight" / "results.csv").read_text().splitlines()
    ]


def test_a_thousand_member_grid_trains_two_epochs(tmp_path, monkeypatch, capsys):
    """1,000 members on iris (10 rates x 10 momenta x 10 weight decays), 2 epochs: grid expanded
    without a parse per member, every member's checkpoints written, the table complete."""
    monkeypatch.chdir(tmp_path)
    rates = ", ".join(f"{0.1 * (i + 1):.1f}" for i in range(10))
    alphas = ", ".join(f"{0.09 * i:.2f}" for i in range(10))
    decays = ", ".join(f"{1e-4 * i:.4f}" for i in range(10))
    grid = ["--grid", f"model.optimizer.lr=[{rates}]", "--grid", f"model.optimizer.alpha=[{alphas}]",
            "--grid", f"model.l2=[{decays}]"]  # fmt: skip
    assert main(["sweep", *IRIS, "--trainer.max_epochs", "2", *grid, "--sweep_dir", "sw"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "sw" / "results.csv")))
    assert len(rows) == 1000 and {r["epochs"] for r in rows} == {"2"}
    assert len(list((tmp_path / "sw").glob("*/checkpoints/last.ckpt"))) == 1000
    assert "LightningCLI" not in capsys.readouterr().err  # no per-member warnings


def test_a_grid_too_large_for_memory_is_refused_with_its_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    values = ", ".join(str(i) for i in range(1000))
    grid = ["--grid", f"seed_everything=[{values}]", "--grid", f"model.l2=[{values}]"]  # 10^6 members
    assert main(["sweep", "--data.dataset", "iris", *grid]) == 2
    err = capsys.readouterr().err
    assert "a grid of 1,000,000 members" in err and "needs about" in err
    assert not (tmp_path / "lightning_logs").exists()
