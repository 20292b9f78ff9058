"""The HParams tab over runs that differ: a classification and a regression run side by side, read
back from the event files and through a real tensorboard server's hparams API."""

import os
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mlp_torch.cli.command import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from tensorboard_server import CannotBind, TensorBoardServer  # noqa: E402

QUIET = ["--trainer.enable_progress_bar", "false"]
RUNS = {
    "iris": ["--data.dataset", "iris", "--trainer.max_epochs", "2"],
    "sine": ["--data.dataset", "sine", "--data.n_samples", "60", "--data.scaling", "standard",
             "--trainer.max_epochs", "3", "--model.lr_scheduler.class_path", "ExponentialLR",
             "--model.lr_scheduler.init_args.gamma", "0.9"],
}  # fmt: skip
DIFFER = {"dataset", "scaling", "max_epochs", "lr_scheduler", "task", "cost"}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    here = os.getcwd()
    os.chdir(folder)
    try:
        for name, args in RUNS.items():
            cost = ["--model.cost", "quadratic"] if name == "sine" else []
            assert main(["fit", *args, *cost, *QUIET, "--trainer.logger.version", name]) == 0
    finally:
        os.chdir(here)
    return folder / "lightning_logs"


def session_hparams(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" not in content  # TensorBoard then builds the lists from all runs
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return {k: v.ListFields()[0][1] for k, v in start.session_start_info.hparams.items()}


def test_event_files_hold_what_tells_the_runs_apart(logdir):
    iris, sine = (session_hparams(logdir / name) for name in RUNS)
    assert iris["dataset"] == "iris" and sine["dataset"] == "sine"
    assert (iris["scaling"], sine["scaling"]) == ("minmax", "standard")
    assert (iris["max_epochs"], sine["max_epochs"]) == (2, 3)
    assert (iris["lr_scheduler"], sine["lr_scheduler"]) == ("None", "ExponentialLR")
    assert sine["lr_scheduler.gamma"] == pytest.approx(0.9) and "lr_scheduler.gamma" not in iris
    for name in ("lr", "alpha", "optimizer", "l2", "batch_size", "hidden_sizes", "seed", "val_fraction",
                 "n_samples", "noise", "convergence.threshold"):  # fmt: skip
        assert name in iris and name in sine, name


def test_hparams_tab_shows_differing_hparams_and_both_tasks_metrics(logdir):
    try:
        tb = TensorBoardServer(logdir).__enter__()
    except CannotBind as err:
        pytest.skip(f"tensorboard cannot listen on a loopback port here: {err}")
    try:
        tb.wait_for_runs(list(RUNS))
        experiment = tb.post("/data/plugin/hparams/experiment", {"experimentName": ""})
        differs = {h["name"] for h in experiment["hparamInfos"] if h.get("differs")}
        assert DIFFER <= differs, differs
        assert "val_fraction" not in differs
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"hp/test_acc", "hp/test_mse", "hp/val_J", "hp/train_J"} <= metrics
        request = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                   "colParams": [], "startIndex": 0, "sliceSize": 10}  # fmt: skip
        groups = tb.post("/data/plugin/hparams/session_groups", request)["sessionGroups"]
        shown = {g["hparams"]["dataset"]: {m["name"]["tag"] for m in g["metricValues"]} for g in groups}
        assert "hp/test_acc" in shown["iris"] and "hp/test_mse" in shown["sine"]
    finally:
        tb.stop()
