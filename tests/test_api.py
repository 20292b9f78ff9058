"""mlp_torch.fit: the command line's fit from Python, in a fresh interpreter and in-process."""

import subprocess
import sys

import pytest
import torch

import mlp_torch
from mlp_torch.cli.api import option_names


def test_fit_on_iris_in_a_fresh_interpreter_shows_one_bar_and_returns_test_figures(tmp_path):
    code = (
        "import mlp_torch\n"
        "run = mlp_torch.fit(dataset='iris', max_epochs=30)\n"
        "print('RESULT', run.test['test/acc'], run.test['test/J'], len(run.history['val/J']), run.log_dir)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    _, acc, J, epochs, log_dir = line.split()
    assert 0.8 <= float(acc) <= 1 and 0 < float(J) < 1 and epochs == "30"
    assert (tmp_path / log_dir / "config.yaml").is_file()
    # the project's bar, a line every few epochs (a pipe), and not Lightning's tqdm bar besides
    assert "epoch 29/29  train J" in proc.stdout and "mlp-torch fit: done" in proc.stdout
    assert "it/s" not in proc.stdout + proc.stderr and "Epoch 0" not in proc.stdout + proc.stderr


def test_fit_returns_the_tested_weights_history_and_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = mlp_torch.fit("xor", max_epochs=5, enable_progress_bar=False, **{"model.optimizer.lr": 2.0})
    assert run.log_dir == tmp_path.joinpath("lightning_logs", "version_0").relative_to(tmp_path)
    assert run.best_path is not None and run.best_path.is_file()
    assert set(run.test) == {"test/acc", "test/J"} and run.epochs == 5
    assert run.history["epoch"] == [0, 1, 2, 3, 4] and len(run.history["train/J"]) == 5
    assert run.history["lr"] == [2.0] * 5
    best = torch.load(run.best_path, weights_only=True)["state_dict"]
    for name, value in run.module.state_dict().items():  # the module holds what was tested
        assert torch.equal(value, best[name]), name
    assert run.data.n_features == 2 and "test/acc" in repr(run)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"datasett": "iris"}, "unknown setting 'datasett' (did you mean dataset?)"),
        ({"seed": 1}, "unknown setting 'seed' (did you mean seed_everything?)"),
        ({"model.seed": 1}, "model.seed is set from seed_everything"),
        ({"model.nope": 3}, "--model.nope"),
        ({"patience": object()}, "patience=<object"),
        ({"dataset": "nope"}, "dataset='nope' is not known"),
        ({"config": "nope"}, "no shipped config of that name"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_raise_a_value_error_naming_them(tmp_path, monkeypatch, settings, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        mlp_torch.fit(**settings, enable_progress_bar=False, max_epochs=1)
    assert message in str(err.value)
    assert not (tmp_path / "lightning_logs").exists()


def test_every_short_name_is_one_option():
    names = option_names()
    assert names["dataset"] == ["data.dataset"] and names["lr"] == ["model.optimizer.lr"]
    assert names["max_epochs"] == ["trainer.max_epochs"] and names["dtype"] == ["model.dtype"]
    assert all(len(where) == 1 for where in names.values()), {n: w for n, w in names.items() if len(w) > 1}


def test_sweep_trains_the_grid_and_its_member_equals_the_same_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = mlp_torch.sweep({"lr": [0.5, 2.0]}, dataset="xor", max_epochs=4, enable_progress_bar=False)
    assert sorted(row["member"] for row in grid.rows) == ["lr=0.5", "lr=2.0"]
    assert (grid.folder / "results.csv").is_file() and grid.module.n_members == 2
    again = mlp_torch.sweep({"lr": [0.5]}, dataset="xor", max_epochs=1, enable_progress_bar=False)
    assert (grid.folder.name, again.folder.name) == ("sweep_0", "sweep_1")  # a process's second sweep
    run = mlp_torch.fit(dataset="xor", max_epochs=4, lr=2.0, enable_progress_bar=False)
    (row,) = [row for row in grid.rows if row["member"] == "lr=2.0"]
    assert row["val/J"] == pytest.approx(min(run.history["val/J"]), rel=1e-6)
    with pytest.raises(ValueError, match="must be a list of the values"):
        mlp_torch.sweep({"lr": 3}, dataset="xor")
    with pytest.raises(ValueError, match="unknown setting 'lrr'"):
        mlp_torch.sweep({"lrr": [3]}, dataset="xor")


def test_help_of_the_package_says_how_to_train_in_a_few_hundred_lines():
    import pydoc

    text = pydoc.render_doc(mlp_torch, renderer=pydoc.plaintext)
    assert "mlp_torch.fit(dataset=" in text and len(text.splitlines()) < 400
    assert all(
        hasattr(mlp_torch, name) for name in ("SigmoidMLP", "MLPModule", "MLPDataModule", "fit", "sweep")
    )
