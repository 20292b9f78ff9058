"""`mlp-torch predict`'s predictions.csv: plain `\\n` lines, a probability per class (or the value
per output), and each example's row in the original data set; the data module's row indices."""

import csv
import io
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, load_wine

from mlp_torch.data import MLPDataModule
from mlp_torch.data.sources import make_sine

QUIET = ["--trainer.enable_progress_bar", "false"]


def fit_then_predict(tmp_path, *data_args, epochs=30):
    def run(*args):
        cmd = [sys.executable, "-m", "mlp_torch.cli", *args, *data_args, *QUIET]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run("fit", "--trainer.max_epochs", str(epochs))
    out = run("predict", "--ckpt_path", "last")
    path = re.search(r"predictions of the test split written to (\S+)", out).group(1)
    raw = (tmp_path / path).read_bytes()
    assert b"\r" not in raw
    return list(csv.DictReader(io.StringIO(raw.decode())))


def test_classification_rows_probabilities_and_original_row(tmp_path):
    rows = fit_then_predict(tmp_path, "--data.dataset", "iris")
    names = load_iris().target_names
    assert list(rows[0]) == ["row", "predicted", "target", "p_setosa", "p_versicolor", "p_virginica"]
    dm = MLPDataModule("iris")
    assert [int(r["row"]) for r in rows] == dm.rows_test.tolist()
    right = 0
    for r in rows:
        p = {name: float(r[f"p_{name}"]) for name in names}
        assert sum(p.values()) == pytest.approx(1, abs=1e-5) and max(p, key=p.get) == r["predicted"]
        assert r["target"] == names[load_iris().target[int(r["row"])]]  # back to the original row
        right += r["predicted"] == r["target"]
    assert right >= 25  # of 30


def test_user_csv_row_is_the_files_data_row(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(80, 2))
    labels = np.where(x[:, 0] > 0, "right", "left")
    lines = ["a,side,b", *(f"{a:.4f},{side},{b:.4f}" for (a, b), side in zip(x, labels))]
    (tmp_path / "sides.csv").write_text("\n".join(lines) + "\n")
    rows = fit_then_predict(tmp_path, "--data.dataset", "sides.csv", "--data.target", "side")
    assert list(rows[0])[:5] == ["row", "predicted", "target", "p_left", "p_right"]
    assert all(r["target"] == labels[int(r["row"])] for r in rows) and len(rows) == 16


def test_regression_value_per_output_and_original_row(tmp_path):
    rows = fit_then_predict(tmp_path, "--data.dataset", "sine", "--data.n_samples", "100", epochs=5)
    _, y = make_sine(100, 0.1, 0)
    assert list(rows[0]) == ["row", "predicted_0", "target_0"] and len(rows) == 20
    for r in rows:
        assert float(r["target_0"]) == pytest.approx(y[int(r["row"]), 0], rel=1e-5)


@pytest.mark.parametrize("folds", [0, 3])
def test_split_rows_partition_the_data_set_and_index_it(folds):
    dm = MLPDataModule("wine", cv_folds=folds, cv_fold=1 if folds else 0)
    rows = torch.cat([dm.rows_train, dm.rows_val, dm.rows_test])
    assert sorted(rows.tolist()) == list(range(178))
    for split in ("train", "val", "test"):
        labels, index = getattr(dm, f"labels_{split}"), getattr(dm, f"rows_{split}")
        assert torch.equal(labels, torch.as_tensor(load_wine().target)[index])


def test_predict_from_the_best_checkpoint(tmp_path):
    def run(*args):
        cmd = [sys.executable, "-m", "mlp_torch.cli", *args, "--data.dataset", "iris", *QUIET]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    # a rate far too large: val/J is lowest before the last epoch (seed 0), so best != last
    out = run("fit", "--trainer.max_epochs", "8", "--model.optimizer.lr", "30")
    best = re.search(r"tested\s+best checkpoint \S*(best-epoch=\d+\.ckpt)", out).group(1)
    assert best != "best-epoch=7.ckpt"
    out = run("predict", "--ckpt_path", "best")
    loaded = rf"Loaded model weights from the checkpoint at \S*version_0/checkpoints/{best}"
    assert re.search(loaded, out), out
    assert "predictions of the test split written to" in out


def _predict_file(tmp_path, capsys, *args) -> list[dict]:
    from mlp_torch.cli.command import main

    assert main(["predict", "--ckpt_path", "best", *args, *QUIET]) == 0
    path = re.search(r"written to (\S+)", capsys.readouterr().out).group(1)
    return list(csv.DictReader(io.StringIO((tmp_path / path).read_text())))


def test_predict_file_rows_equal_the_test_splits_predictions_in_any_column_order(
    tmp_path, monkeypatch, capsys
):
    """A user's CSV: its test rows written again with the columns reversed and every other label
    blank predict exactly what `predict` gives for the test split; one output row per input row."""
    from mlp_torch.cli.command import main

    monkeypatch.chdir(tmp_path)
    bunch = load_wine()
    names = [f"f{j}" for j in range(bunch.data.shape[1])]
    labels = np.asarray(["barolo", "grignolino", "barbera"])[bunch.target]
    with open("wine.csv", "w", newline="") as f:
        csv.writer(f).writerows([[*names, "kind"], *([*x, t] for x, t in zip(bunch.data.tolist(), labels))])
    data = ["--data.dataset", "wine.csv", "--data.target", "kind"]
    assert main(["fit", *data, "--trainer.max_epochs", "20", *QUIET]) == 0
    capsys.readouterr()
    test = _predict_file(tmp_path, capsys)
    with open("new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", *names[::-1]])
        for i, r in enumerate(test):
            w.writerow([r["target"] if i % 2 else "", *bunch.data[int(r["row"])].tolist()[::-1]])
    new = _predict_file(tmp_path, capsys, "--data.predict_file", "new.csv")
    assert [int(r["row"]) for r in new] == list(range(len(test))) and list(new[0]) == list(test[0])
    for i, (a, b) in enumerate(zip(test, new)):
        assert [a[k] for k in a if k.startswith("p_")] == [b[k] for k in b if k.startswith("p_")]
        assert a["predicted"] == b["predicted"] and b["target"] == (a["target"] if i % 2 else "")


def test_predict_file_for_a_built_in_set_and_regression_without_targets(tmp_path, monkeypatch, capsys):
    from mlp_torch.cli.command import main

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--data.dataset", "sine", "--trainer.max_epochs", "5", *QUIET]) == 0
    capsys.readouterr()
    (tmp_path / "x.csv").write_text("x\n0.5\n-1\n2\n")
    rows = _predict_file(tmp_path, capsys, "--data.predict_file", "x.csv")
    assert [r["row"] for r in rows] == ["0", "1", "2"] and all(r["target_0"] == "" for r in rows)
    np.savez(tmp_path / "x.npz", x=np.array([[0.5], [-1.0], [2.0]]), target=np.array([0.1, 0.2, 0.3]))
    again = _predict_file(tmp_path, capsys, "--data.predict_file", "x.npz")
    assert [r["predicted_0"] for r in again] == [r["predicted_0"] for r in rows]
    assert [float(r["target_0"]) for r in again] == [0.1, 0.2, 0.3]


BAD_FILES = [
    ("a,b,c,d,target\n1,2,3,4,nonsense\n", "'nonsense', not a class the network was trained on"),
    ("a,b,c\n1,2,3\n", "has 3 input columns (besides 'target') but the network takes 4"),
    ("a,b,c,d\n1,2,x,4\n", "column 3 of 4 is not numeric on line 2"),
    ("a,b,c,d\n", "needs a header row naming the columns, then at least one row"),
]


def test_a_bad_predict_file_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from mlp_torch.cli.command import main

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--data.dataset", "iris", "--trainer.max_epochs", "2", *QUIET]) == 0
    for content, message in BAD_FILES:
        (tmp_path / "new.csv").write_text(content)
        capsys.readouterr()
        assert main(["predict", "--ckpt_path", "last", "--data.predict_file", "new.csv", *QUIET]) == 2
        err = capsys.readouterr().err
        assert message in err and "predict_file 'new.csv'" in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("lightning_logs/*/predict/*.csv"))
    assert main(["fit", "--data.dataset", "iris", "--data.predict_file", "new.csv"]) == 2
    assert "--data.predict_file is for mlp-torch predict" in capsys.readouterr().err
