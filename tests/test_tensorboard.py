"""TensorBoard for real: the `tensorboard` server started on a free loopback port over the logs of
a real `mlp-torch fit` and of a real `mlp-torch sweep`, read back through its HTTP data API
(scalars, histograms, text, hparams; the sweep's member runs), and the Scalars dashboard of the
sweep rendered by headless Chromium as a person would see it.

The server tests skip (with the reason) where no loopback port can be bound; the browser test
skips where no Chromium is installed (``scripts/setup`` does not install one; on Debian:
``apt-get install chromium``). Every server and browser is stopped, whatever the outcome.
"""

import math
import os
import sys
import urllib.parse
from pathlib import Path

import pytest

from mlp_torch.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from tensorboard_server import (  # noqa: E402
    CannotBind,
    HeadlessChromium,
    TensorBoardServer,
    chromium,
    scalar_chart,
    scalars_url,
)

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
IRIS = ["fit", "--data.dataset", "iris", "--trainer.max_epochs", "5", *QUIET]  # about a second each
# a rate far too large: J rises within the 5 epochs (seed 0), so the J-rise text is logged too;
# histograms every epoch (the default is every 10th)
FIT = [*IRIS, "--model.optimizer.lr", "30", "--model.histograms_every_n_epochs", "1"]


def mlp_torch_in(folder: Path, *args: str) -> None:
    """``mlp-torch ARGS`` in-process with ``folder`` as the working directory."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        assert main(list(args)) == 0
    finally:
        os.chdir(here)


def serve(logdir: Path):
    """A started :class:`TensorBoardServer`, or a skip if no loopback port can be bound."""
    try:
        return TensorBoardServer(logdir).__enter__()
    except CannotBind as err:
        pytest.skip(f"tensorboard cannot listen on a loopback port here: {err}")


@pytest.fixture(scope="module")
def fit_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    mlp_torch_in(folder, *FIT)
    server = serve(folder / "lightning_logs")
    try:
        yield server
    finally:
        server.stop()
    assert server.proc.poll() is not None  # the server is gone


def test_fit_scalars_histograms_and_text_through_the_http_api(fit_server):
    tb = fit_server
    scalars = tb.wait_for_runs(["version_0"])["version_0"]
    expected = [
        "train/J",
        "train/cost",
        "train/l1",
        "train/l2",
        "val/J",
        "val/acc",
        "test/acc",
        "test/J",
        "lr",
    ]
    expected += ["sparsity/layer_0", "sparsity/layer_1", "diagnostics/J_rose", "hp/test_acc"]
    for tag in expected:
        assert tag in scalars, tag
    query = urllib.parse.urlencode({"run": "version_0", "tag": "train/J"})
    points = tb.get(f"/data/plugin/scalars/scalars?{query}")  # [[wall_time, step, value], ...]
    assert [step for _, step, _ in points] == [0, 1, 2, 3, 4]  # one point per epoch

    histograms = tb.get("/data/plugin/histograms/tags")["version_0"]
    for kind in ("weights", "grads"):
        for param in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"):
            assert f"{kind}/{param}" in histograms
    query = urllib.parse.urlencode({"run": "version_0", "tag": "weights/layers.0.weight"})
    assert len(tb.get(f"/data/plugin/histograms/histograms?{query}")) == 5  # one per epoch

    text_tags = tb.get("/data/plugin/text/tags")["version_0"]
    assert text_tags == ["diagnostics/J_rose/text_summary"]
    query = urllib.parse.urlencode({"run": "version_0", "tag": text_tags[0]})
    texts = tb.get(f"/data/plugin/text/text?{query}")
    assert texts and all("training J rose" in t["text"] and "learning rate 30" in t["text"] for t in texts)


def test_fit_hparams_through_the_http_api(fit_server):
    tb = fit_server
    tb.wait_for_runs(["version_0"])
    experiment = tb.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"lr", "alpha", "optimizer", "l2", "batch_size", "hidden_sizes", "cost"} <= hparams
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"hp/test_acc", "hp/test_J", "hp/val_J", "hp/train_J"} <= metrics
    request = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": [],
               "startIndex": 0, "sliceSize": 10}  # fmt: skip
    (group,) = tb.post("/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert group["hparams"]["lr"] == 30 and group["hparams"]["optimizer"] == "Momentum"
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    query = urllib.parse.urlencode({"run": "version_0", "tag": "test/acc"})
    (test_acc,) = [value for _, _, value in tb.get(f"/data/plugin/scalars/scalars?{query}")]
    assert values["hp/test_acc"] == pytest.approx(test_acc)


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory):
    """``mlp-torch sweep`` of 2 rates x 2 seeds on iris; its four member runs in one server."""
    folder = tmp_path_factory.mktemp("sweep")
    grid = ["--grid", "model.optimizer.lr=[1, 30]", "--grid", "seed_everything=[0, 1]"]
    mlp_torch_in(folder, "sweep", *IRIS[1:], *grid, "--sweep_dir", "sweep")
    runs = [f"lr={lr},seed_everything={seed}" for lr in (1, 30) for seed in (0, 1)]
    server = serve(folder / "sweep")
    try:
        yield server, runs
    finally:
        server.stop()


def test_sweep_member_runs_through_the_http_api(sweep_server):
    tb, runs = sweep_server
    scalars = tb.wait_for_runs(runs)
    assert sorted(tb.get("/data/runs")) == sorted(runs)  # one run per member, named by its settings
    for run in runs:
        for tag in ("train/J", "train/cost", "val/J", "val/acc", "lr"):
            assert tag in scalars[run], (run, tag)
        query = urllib.parse.urlencode({"run": run, "tag": "train/J"})
        assert [step for _, step, _ in tb.get(f"/data/plugin/scalars/scalars?{query}")] == [0, 1, 2, 3, 4]
    request = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": [],
               "startIndex": 0, "sliceSize": 10}  # fmt: skip
    groups = {g["name"]: g for g in tb.post("/data/plugin/hparams/session_groups", request)["sessionGroups"]}
    assert sorted(groups) == sorted(runs)
    for run, group in groups.items():  # each member's own settings, and its metrics
        lr, seed = (part.split("=")[1] for part in run.split(","))
        assert group["hparams"]["model.optimizer.lr"] == float(lr)
        assert group["hparams"]["seed_everything"] == float(seed)
        assert {"hp/val_J", "hp/val_acc"} <= {m["name"]["tag"] for m in group["metricValues"]}


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("MLP_TORCH_REQUIRE_BROWSER"),
    reason="no chromium installed (Debian: apt-get install chromium)",
)
def test_scalars_dashboard_draws_every_members_train_J_in_chromium(sweep_server, tmp_path):
    """Skipped where no chromium is installed, unless MLP_TORCH_REQUIRE_BROWSER is set (.ci/run
    installs Debian's chromium and sets it, so CI runs this test or fails)."""
    assert chromium() is not None, "MLP_TORCH_REQUIRE_BROWSER is set but no chromium is installed"
    tb, runs = sweep_server
    tb.wait_for_runs(runs)
    with HeadlessChromium(scalars_url(tb, "train/J")) as page:
        state = scalar_chart(page, "train/J", runs)
        page.screenshot(tmp_path / "scalars.png")
    assert sorted(state["runs"]) == sorted(runs)  # the run selector lists each member
    (card,) = state["cards"]  # the one train/J chart ...
    assert sorted(card["runs"]) == sorted(runs)  # ... loads every member's run
    assert len(card["colours"]) == len(runs)  # ... and draws a line in each one's colour
    assert (tmp_path / "scalars.png").stat().st_size > 10_000  # a real picture, not an empty page


def test_the_compiled_histograms_count_as_torch_histc(monkeypatch):
    """histogram_figures' compiled pass (numba loaded) gives torch's figures: the same min, max and
    counts (torch.histc's bins, values on the bins' edges included), the sum and the sum of squares
    to 1e-12 relative (summed in another order), nothing for NaN or inf, one bin for equal values;
    float32 and float64, CPU tensors and views."""
    import torch

    from mlp_torch.train import events

    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(0)
    on_edges = torch.arange(-15, 16, dtype=torch.float64).repeat(3)  # (93,): every bin edge of 30 bins
    cases = [torch.randn(n, generator=g) for n in (1, 2, 7, 6400)] + [
        on_edges, on_edges / 7, 1 + 1e-12 * torch.randn(50, generator=g, dtype=torch.float64),
        1e30 * torch.randn(64, generator=g), torch.full((5,), 0.25), torch.zeros(4, dtype=torch.float64),
        torch.randn(8, 100, generator=g)[3], torch.randn(10, 10, generator=g).t(),
        torch.tensor([1.0, float("nan")]), torch.tensor([float("nan"), 1.0]),
        torch.tensor([1.0, float("inf")]), torch.tensor([-float("inf"), 2.0]),
        torch.tensor([1e200, 1e200], dtype=torch.float64),
    ]  # fmt: skip
    cases += [t.double() for t in cases[:4]] + [on_edges.float()]
    compiled = [events.histogram_figures(t, bins) for t in cases for bins in (30, 5)]
    assert events._compiled(events._histogram) is not None  # numba is loaded here: the compiled pass ran
    monkeypatch.setattr(events, "_compiled", lambda fn: None)
    theirs = [events.histogram_figures(t, bins) for t in cases for bins in (30, 5)]
    assert [c is None for c in compiled] == [t is None for t in theirs]
    assert sum(c is None for c in compiled) == 2 * 5  # the NaN, inf and overflowing cases
    for ours, torchs in zip(compiled, theirs):
        if ours is None:
            continue
        low, high, total, squares, counts = ours
        assert (low, high, counts) == (torchs[0], torchs[1], torchs[4])
        scale = math.sqrt(sum(counts) * squares)  # >= sum |v|: the sums' rounding is relative to it
        assert total == pytest.approx(torchs[2], rel=0, abs=1e-12 * scale)
        assert squares == pytest.approx(torchs[3], rel=1e-12, abs=0)
    assert compiled[4 * 2][4] == [3] * 29 + [6]  # -15 ... 15, 3 each: 15 is the max, in the last bin


def test_the_records_checksums_are_tensorboards(tmp_path):
    """RunEvents' CRC-32C (compiled where numba is loaded) is TensorBoard's masked_crc32c, on
    every length; a written file's records all carry the checksums TensorBoard's reader expects."""
    import random
    import struct

    import torch
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    from mlp_torch.train import events

    pytest.importorskip("numba")
    crc = events.checksum()
    assert crc is not masked_crc32c  # numba is loaded here: the compiled one
    rng = random.Random(0)
    for n in [0, 1, 3, 8, 9, 255, 256, 1000]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc(data) == masked_crc32c(data), n
    run = events.RunEvents(tmp_path)
    run.add({"train/J": 0.5, "val/acc": 0.9}, step=0)
    run.histogram("weights/W1", torch.randn(100, 64), step=0)
    run.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    raw, at, records = path.read_bytes(), 0, 0
    while at < len(raw):
        header = raw[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[at + 8 : at + 12])
        data = raw[at + 12 : at + 12 + length]
        (data_crc,) = struct.unpack("<I", raw[at + 12 + length : at + 16 + length])
        assert header_crc == masked_crc32c(header) and data_crc == masked_crc32c(data)
        at, records = at + 16 + length, records + 1
    assert records == 3  # the file version, the scalars, the histogram
