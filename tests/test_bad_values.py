"""Every bad value is one line `mlp-torch: error: ...`, exit 2, before anything is allocated or
written (issue 8, item 8), and the smaller messages of item 9: saturation at chance, J rises
counted over a resumed run, a single-class data set, a folder given as a data file, a
state-dict-only checkpoint."""

import zipfile

import numpy as np
import pytest
import torch

from mlp_torch.cli.command import main

QUIET = ["--trainer.enable_progress_bar", "false"]
IRIS = ["--data.dataset", "iris", *QUIET]


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mlp-torch:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def huge_npz(path):
    """A few hundred bytes whose header claims a (2**35, 1) float64 array: 256 GiB."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, shape in (("x", (2**35, 1)), ("y", (2**35,))):
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f8", "fortran_order": False, "shape": shape}
                )
    return path


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--trainer.max_epochs", "-2"], "max_epochs=-2 must be an integer >= 1"),
        (["--trainer.accelerator", "gpu"], "gpu"),
        (["--model.hidden_sizes", "[100000000]"], "needs about"),
        (["--trainer.devices", "0"], "devices"),
        (["--trainer.check_val_every_n_epoch", "0"], "check_val_every_n_epoch=0 must be an integer >= 1"),
        (["--checkpoint.save_top_k", "-2"], "save_top_k"),
        (["--checkpoint.monitor", "val/bogus"], "monitor='val/bogus' is not a metric of this run"),
        (["--checkpoint.every_n_epochs", "-1"], "every_n_epochs"),
        (["--trainer.max_time", "bogus"], "bogus"),
        (["--model.optimizer.lr", "-1"], "learning rate"),
        (["--weights_only", "false"], "--weights_only false is refused"),
        (["--data.dataset", "HUGE"], "256 GiB"),
        (["--data.dataset", "FOLDER"], "is a folder, not a file"),
        (["--data.dataset", "ONECLASS", "--data.target", "y"], "single class"),
        (["--ckpt_path", "hpc"], "no hpc_ckpt_N.ckpt"),
        (["--ckpt_path", "CORRUPT_HPC"], "not a readable checkpoint"),
        (["--ckpt_path", "STATE_DICT"], "holds only a state_dict"),
    ],
)
def test_bad_value_is_one_line_exit_2_and_nothing_is_written(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "folder.csv").mkdir()
    (inputs / "one.csv").write_text("a,y\n1,5\n2,5\n3,5\n4,5\n")
    huge_npz(inputs / "huge.npz")
    (inputs / "hpc_ckpt_3.ckpt").write_bytes(b"\x80\x02garbage")
    torch.save({"net.layers.0.weight": torch.zeros(2, 2)}, inputs / "state_dict.ckpt")
    names = {
        "HUGE": inputs / "huge.npz",
        "FOLDER": inputs / "folder.csv",
        "ONECLASS": inputs / "one.csv",
        "CORRUPT_HPC": "hpc",
        "STATE_DICT": inputs / "state_dict.ckpt",
    }
    args = [str(names.get(a, a)) for a in args]
    if expected in ("not a readable checkpoint", "no hpc_ckpt_N.ckpt"):
        args += ["--trainer.default_root_dir", str(inputs if expected != "no hpc_ckpt_N.ckpt" else tmp_path)]
    assert main(["fit", *IRIS, *args]) == 2
    line = error_line(capsys)
    assert expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # nothing written
    assert sorted(p.name for p in inputs.iterdir()) == [
        "folder.csv", "hpc_ckpt_3.ckpt", "huge.npz", "one.csv", "state_dict.ckpt"
    ]  # fmt: skip


def test_resume_below_the_checkpoints_epoch_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *IRIS, "--trainer.max_epochs", "3"]) == 0
    capsys.readouterr()
    assert main(["fit", "--ckpt_path", "last", "--trainer.max_epochs", "2", *QUIET]) == 2
    assert "below the checkpoint's 3 completed epochs" in error_line(capsys)


def test_saturated_outputs_at_chance_are_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *IRIS, "--model.optimizer.lr", "1000", "--model.cost", "quadratic"]) == 0
    assert "the outputs are saturated" in caplog.text and "at chance" in caplog.text


def test_healthy_run_has_no_saturation_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *IRIS, "--trainer.max_epochs", "30"]) == 0
    assert "saturated" not in caplog.text


def test_resumed_run_counts_the_j_rises_of_the_whole_run(tmp_path, monkeypatch, capsys):
    common = [
        *IRIS,
        "--model.batch_size",
        "full",
        "--model.optimizer.lr",
        "30",
        "--convergence.enabled",
        "false",
    ]
    summaries = []
    runs = {
        "straight": [["--trainer.max_epochs", "12"]],
        "resumed": [["--trainer.max_epochs", "6"], ["--trainer.max_epochs", "12", "--ckpt_path", "last"]],
    }
    for name, steps in runs.items():
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        for step in steps:
            assert main(["fit", *common, *step]) == 0
        summaries.append([line for line in capsys.readouterr().out.splitlines() if "J rose" in line][-1])
    assert summaries[0] == summaries[1] and "of 12 epochs" in summaries[0], summaries
