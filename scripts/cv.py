"""Cross-validate an `mlp-torch fit` setup on the non-test examples: the test split is never used.

This chose the default (see docs/results.md):

    .venv/bin/python scripts/cv.py                                  # the default, seeds 0-4, 5 folds
    .venv/bin/python scripts/cv.py --versus "--model.l2 0 --model.optimizer.lr 2.0"
    .venv/bin/python scripts/cv.py -- --config notes   # any `mlp-torch fit` arguments

For each seed (``--seed_everything``: the split, the initial weights, the shuffle order) the
examples outside that seed's test split are cut into k stratified folds (``--data.cv_folds k
--data.cv_fold i``); each fold in turn is the validation split, the other k - 1 train. Every run
trains as `mlp-torch fit` does (same callbacks, best checkpoint by val/J) and scores that
checkpoint on its held-out fold, so with 5 seeds x 5 folds every setup is judged on about 7,200
held-out predictions instead of one validation split of 359.

``--versus ARGS`` also runs a second setup on the very same folds and reports the paired
difference (mean, its standard error, and how many folds each side won), which is far less noisy
than comparing two means.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from mlp_torch.cli.command import run_reporting_errors
from mlp_torch.train.threads import available_cores

ROOT = Path(__file__).resolve().parents[1]


def run_fold(extra: list[str], seed: int, folds: int, fold: int) -> tuple[float, int, int]:
    """Train one fold; returns (the held-out fold's val/acc or val/mse, epochs run, epochs in
    which training J rose)."""
    from mlp_torch.cli.fit import make_cli
    from mlp_torch.train.callbacks import LearningRateDiagnostics

    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "mlp_torch"):  # J-rise lines too
        logging.getLogger(name).setLevel(logging.ERROR)
    extra = [str(ROOT / a) if a.startswith("configs/") else a for a in extra]
    with tempfile.TemporaryDirectory() as folder:
        args = [*extra, "--seed_everything", str(seed), "--data.cv_folds", str(folds),
                "--data.cv_fold", str(fold), "--trainer.default_root_dir", folder,
                "--checkpoint.dirpath", folder, "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false"]  # fmt: skip
        cli = make_cli(args, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    metric = "val/acc" if "val/acc" in metrics[0] else "val/mse"
    diagnostics = next(c for c in cli.trainer.callbacks if isinstance(c, LearningRateDiagnostics))
    return metrics[0][metric], cli.trainer.current_epoch, len(diagnostics.increases)


def cross_validate(extra: list[str], seeds: list[int], folds: int, jobs: int) -> list[float]:
    """The held-out score of every (seed, fold), seed-major; prints a line per seed with the
    scores, the epochs run and the number of epochs in which training J rose."""
    tasks = [(extra, s, folds, f) for s in seeds for f in range(folds)]
    # Each run chooses its threads by the rule of mlp_torch.train.threads, among its share of the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // jobs)))
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(run_fold, *zip(*tasks, strict=True)))
    scores = [r[0] for r in results]
    for i, seed in enumerate(seeds):
        part = results[i * folds : (i + 1) * folds]
        mean = statistics.mean(r[0] for r in part)
        shown = " ".join(f"{r[0]:.4f}" for r in part)
        epochs = " ".join(str(r[1]) for r in part)
        rises = " ".join(str(r[2]) for r in part)
        print(f"  seed {seed}: mean {mean:.4f}  folds {shown}  epochs {epochs}  J rose in {rises}")
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (each on its share of cores)")
    parser.add_argument("--versus", metavar="ARGS", help="a second setup's `mlp-torch fit` arguments")
    parser.add_argument("extra", nargs="*", help="arguments for `mlp-torch fit` (after --)")
    args = parser.parse_args()
    if args.folds < 2 or not args.seeds or args.jobs < 1:
        parser.error(f"--folds {args.folds}, --jobs {args.jobs}: need --folds >= 2, --jobs >= 1, a seed")
    return run_reporting_errors(lambda: compare(args), prog="cv.py")


def compare(args: argparse.Namespace) -> int:
    """Cross-validate setup A (and B), print the scores and the paired difference; returns 0."""
    setups = {"A": args.extra}
    if args.versus is not None:
        setups["B"] = shlex.split(args.versus)
    scores = {}
    for name, extra in setups.items():
        print(f"setup {name}: mlp-torch fit {shlex.join(extra) or '(the default)'}", flush=True)
        scores[name] = cross_validate(extra, args.seeds, args.folds, args.jobs)
        print(f"setup {name}: mean held-out score {statistics.mean(scores[name]):.4f} "
              f"over {len(scores[name])} folds (seeds {args.seeds})", flush=True)  # fmt: skip
    if "B" in scores:
        diff = [a - b for a, b in zip(scores["A"], scores["B"], strict=True)]
        se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        wins, losses = sum(d > 0 for d in diff), sum(d < 0 for d in diff)
        print(f"A - B: {statistics.mean(diff):+.4f} (standard error {se:.4f}); "
              f"A better on {wins} folds, B on {losses}, {len(diff) - wins - losses} ties")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
