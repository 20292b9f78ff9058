"""What `mlp-torch fit` prints: no unrelated Lightning lines, and a summary whose hints fit the run."""

import subprocess
import sys

QUIET = ["--trainer.enable_progress_bar", "false"]


def run(*args, cwd):
    cmd = [sys.executable, "-m", "mlp_torch.command", *args]
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
