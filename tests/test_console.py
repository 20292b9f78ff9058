"""What `mlp-torch fit` prints: no unrelated Lightning lines, and a summary whose hints fit the run."""

import io
import re
import subprocess
import sys

import lightning.pytorch as L

QUIET = ["--trainer.enable_progress_bar", "false"]


def run(*args, cwd):
    cmd = [sys.executable, "-m", "mlp_torch.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_batch_gradient_descent_summary_has_no_mini_batch_noise_hint_and_no_lightning_tips(tmp_path):
    args = ["fit", "--data.dataset", "iris", "--model.batch_size", "full", "--model.optimizer.lr", "30"]
    proc = run(*args, "--trainer.max_epochs", "3", *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    rose = next(line for line in proc.stdout.splitlines() if line.startswith("  J rose"))
    assert "batch GD has no sampling noise" in rose and "mini-batch" not in rose
    for unrelated in ("GPU available", "TPU available", "litlogger", "Tip:", "Seed set to"):
        assert unrelated not in out, out
    # resumed: the checkpoint folder is not empty, on purpose, and nothing says so
    proc = run(*args, "--trainer.max_epochs", "4", "--ckpt_path", "last", *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exists and is not empty" not in proc.stdout + proc.stderr


def test_mini_batch_summary_keeps_the_noise_hint(tmp_path):
    proc = run("fit", "--data.dataset", "iris", "--model.optimizer.lr", "30", "--trainer.max_epochs", "4",
               *QUIET, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rose = next(line for line in proc.stdout.splitlines() if line.startswith("  J rose"))
    assert "mini-batch noise if by a few %" in rose


def test_default_run_piped_to_a_file_prints_one_line_per_few_epochs(tmp_path):
    """Piped, the default run prints about twenty progress lines whatever max_epochs is (the full
    200-epoch run printed 48 lines in all), no per-epoch bars and no validation bars."""
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "mlp_torch.cli", "fit", "--trainer.max_epochs", "40"]
        proc = subprocess.run(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) < 60, lines
    progress = [line for line in lines if line.startswith("epoch ") and "updates/s" in line]
    assert [line.split()[1] for line in progress] == ["0/39", *(f"{k}/39" for k in range(1, 40, 2))]
    last = r"epoch 39/39  train J \S+  val J \S+  val acc \d+\.\d\d%  [\d,]+ updates/s"
    assert re.fullmatch(last, progress[-1]), progress[-1]
    text = log.read_text()
    assert "Validation" not in text and "1/1" not in text and "\r" not in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_bar_over_the_epochs(tmp_path):
    from mlp_torch.data import MLPDataModule
    from mlp_torch.train.module import MLPModule
    from mlp_torch.train.progress import EpochProgressBar

    screen = Terminal()
    dm = MLPDataModule("sine", n_samples=40)
    model = MLPModule(n_inputs=1, n_outputs=1, task="regression", target_low=dm.target_low,
                      target_high=dm.target_high, hidden_sizes=[5])  # fmt: skip
    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[EpochProgressBar(stream=screen)], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    shown = screen.getvalue()
    assert shown.count("\n") == 1 and "6/6" in shown and "val mse" in shown and "updates/s" in shown
    trainer.validate(model, datamodule=dm, verbose=False)
    assert screen.getvalue() == shown  # no bar for validation
