"""Run the shipped configs (configs/*.yaml) as `mlp-torch fit --config` and check that each one
reaches the level it is shipped for; prints docs/cli.md's table of them.

    .venv/bin/python scripts/configs.py                         # every config (a few minutes)
    .venv/bin/python scripts/configs.py sine.yaml xor.yaml      # some of them

Each run: seed 0, in a temporary folder (no logs left behind), tested on the held-out test split
at the checkpoint with the lowest validation J. Exit code 1 if a config misses its level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seeds import run_seed

ROOT = Path(__file__).resolve().parents[1]
# config -> (metric, level): test/acc at least this, or test/mse at most this
LEVELS: dict[str, tuple[str, float]] = {
    "default.yaml": ("test/acc", 0.97),
    "notes.yaml": ("test/acc", 0.97),
    "batch.yaml": ("test/acc", 0.95),
    "stochastic.yaml": ("test/acc", 0.96),
    "minibatch.yaml": ("test/acc", 0.96),
    "l1.yaml": ("test/acc", 0.96),
    "l2.yaml": ("test/acc", 0.95),  # ten times the default's weight decay: it shows shrinking, not accuracy
    "xor.yaml": ("test/acc", 0.99),
    "sine.yaml": ("test/mse", 0.02),
}


def check(name: str) -> tuple[bool, str]:
    """Run ``configs/NAME``; whether it reached its level, and its table row in docs/cli.md."""
    metric, level = LEVELS[name]
    result = run_seed(0, ["--config", f"configs/{name}"])
    value = result[metric]
    met = value >= level if metric == "test/acc" else value <= level
    shown = f"{value:.2%}" if metric == "test/acc" else f"{value:.4f}"
    wanted = f">= {level:.0%}" if metric == "test/acc" else f"<= {level:g}"
    epochs = str(result["epochs"]).split(" (")[0]
    row = f"| `{name}` | {metric} {shown} | {wanted} | {epochs} | {result['wall']} |"
    return met, row


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("configs", nargs="*", help="file names in configs/ (default: all)")
    args = parser.parse_args()
    shipped = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    unknown = sorted(set(shipped) - set(LEVELS)) or sorted(set(args.configs) - set(shipped))
    if unknown:
        print(f"configs.py: error: no level stated for {', '.join(unknown)}", file=sys.stderr)
        return 2
    print("| config | seed 0 | level | epochs | wall time |\n|---|---|---|---|---|")
    missed = []
    for name in args.configs or shipped:
        met, row = check(name)
        print(row if met else f"{row} MISSED", flush=True)
        missed += [] if met else [name]
    if missed:
        print(f"configs.py: below the stated level: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
