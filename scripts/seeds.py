"""Run `mlp-torch fit` once per seed and report the test metric of each run and their median.

This produced the accuracy figures in docs/results.md:

    .venv/bin/python scripts/seeds.py                                  # the default (digits)
    .venv/bin/python scripts/seeds.py -- --config notes   # the notes' literal setup

Each seed (``--seed_everything``) sets the split, the initial weights and the shuffle order. Runs
happen in a temporary folder, so no logs are left behind; the model is tested on the held-out
test split at the checkpoint with the lowest validation J.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, extra: list[str]) -> dict[str, float | str]:
    """One `mlp-torch fit` run; returns its summary figures (test/acc or test/mse, epochs, time)."""
    extra = [str(ROOT / a) if a.startswith("configs/") else a for a in extra]
    cmd = [sys.executable, "-m", "mlp_torch.cli", "fit", *extra, "--seed_everything", str(seed),
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed}: mlp-torch fit failed:\n{proc.stderr[-2000:]}")
    out: dict[str, float | str] = {"seed": seed}
    for name in ("test/acc", "test/mse"):
        m = re.search(rf"^\s+{name}\s+([0-9.e+-]+)(%?)", proc.stdout, re.M)
        if m:
            out[name] = float(m.group(1)) / (100 if m.group(2) else 1)
    out["epochs"] = re.search(r"^\s+epochs\s+(.*)$", proc.stdout, re.M).group(1)
    out["wall"] = re.search(r"^\s+wall time\s+(.*)$", proc.stdout, re.M).group(1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs="*", help="arguments for `mlp-torch fit` (after --)")
    args = parser.parse_args()
    results = [run_seed(s, args.extra) for s in args.seeds]
    metric = "test/acc" if "test/acc" in results[0] else "test/mse"
    for r in results:
        value = f"{r[metric]:.2%}" if metric == "test/acc" else f"{r[metric]:.4g}"
        print(f"seed {r['seed']}: {metric} {value}  epochs {r['epochs']}  wall {r['wall']}")
    median = statistics.median(r[metric] for r in results)
    print(
        f"median {metric} over seeds {args.seeds}: "
        + (f"{median:.2%}" if metric == "test/acc" else f"{median:.4g}")
    )


if __name__ == "__main__":
    main()
