"""What a run prints and leaves behind for a person: the summary of ``fit``, the table of a sweep
(and its ``results.csv``), each run's entry in TensorBoard's HParams tab, ``predictions.csv``."""

from __future__ import annotations

import csv
import math
import shutil
import sys
from pathlib import Path

import torch

from mlp_torch.data import MLPDataModule
from mlp_torch.train.callbacks import Convergence
from mlp_torch.train.events import RunEvents
from mlp_torch.train.module import MemberStatus, MLPModule

__all__ = ["DATA_HPARAMS", "fit_summary", "hparams_entry", "log_hparams", "sweep_table", "write_predictions"]

DATA_HPARAMS = ("dataset", "target", "scaling", "val_fraction", "test_fraction", "n_samples", "noise",
                "cv_folds", "cv_fold")  # fmt: skip


def hparams_entry(
    module: MLPModule, k: int, data: dict, max_epochs: int | None, convergence: Convergence
) -> dict[str, int | float | str | bool]:
    """What tells member ``k``'s run apart from others, for TensorBoard's HParams tab: the model's
    settings (``seed`` too), the optimizer and the learning-rate schedule with their settings,
    the data set and how it is split and scaled, ``max_epochs`` and the convergence stop."""
    hp = {
        key: v for key, v in module.member_hparams[k].items() if not key.startswith("_")
    }  # not LightningCLI's
    hp.update(module.optimizer_hparams(k))
    scheduler = module.member_schedulers[k] if module.member_schedulers else None
    hp["lr_scheduler"] = type(scheduler).__name__ if scheduler is not None else "None"
    if scheduler is not None:
        settings = scheduler.state_dict()  # e.g. gamma; not its counters
        skip = ("last_epoch", "verbose", "base_lrs", "_last_lr", "_step_count", "_get_lr_called_within_step",
                "_is_initial")  # fmt: skip
        hp.update({f"lr_scheduler.{key}": v for key, v in settings.items() if key not in skip})
    hp.update({name: data.get(name) for name in DATA_HPARAMS})
    hp["max_epochs"] = max_epochs
    hp.update(
        {f"convergence.{key}": getattr(convergence, key) for key in ("enabled", "threshold", "patience")}
    )
    scalar = (int, float, str, bool)
    return {key: v if isinstance(v, scalar) else str(v) for key, v in hp.items() if not key.startswith("_")}


def log_hparams(folder: str | Path, hp: dict, metrics: dict[str, float], step: int) -> None:
    """A run's hyper-parameters and final metrics (``hp/...``) for the HParams tab, in its folder.

    No experiment summary is written: TensorBoard takes the hparam and metric lists of the first
    run that has one for all runs (another task's metrics then go missing, and no hparam
    "differs"); without one it builds both lists from all runs, as the tab should.
    """
    from torch.utils.tensorboard.summary import hparams

    events = RunEvents(folder)
    events.add(metrics, step)
    _, start, end = hparams(hp, metrics)
    events.summary(start, step)
    events.summary(end, step)
    events.close()


def final_metrics(*figures: dict[str, float]) -> dict[str, float]:
    """``{"hp/train_J": ...}``: a run's final figures as the HParams tab's metrics."""
    merged = {k: v for f in figures for k, v in f.items()}
    return {f"hp/{k.replace('/', '_')}": float(v) for k, v in merged.items()}


def tensorboard_command() -> str:
    beside = Path(sys.executable).parent / "tensorboard"
    return str(beside) if beside.exists() else (shutil.which("tensorboard") or "tensorboard")


def fit_summary(
    test: dict[str, float], rises: int, largest_rise: float, epochs: int, why: str, full_batch: bool,
    best: str | None, seconds: float, log_dir: str,
) -> str:  # fmt: skip
    """What ``mlp-torch fit`` prints when it is done."""
    lines = ["", "mlp-torch fit: done"]
    for name in ("test/acc", "test/mse", "test/J"):
        if name in test:
            value = test[name]
            lines.append(f"  {name:<9} {value:.2%}" if name == "test/acc" else f"  {name:<9} {value:.6g}")
    if rises:
        hint = (
            "batch GD has no sampling noise: the rate is too large"
            if full_batch
            else "mini-batch noise if by a few %; the rate too large if by much"
        )
        lines.append(f"  J rose    in {rises} of {epochs} epochs, by at most {largest_rise:.1%} ({hint})")
    lines += [
        f"  epochs    {epochs} ({why})",
        f"  tested    {'best checkpoint ' + best if best else 'final weights'}",
        f"  wall time {seconds:.1f} s",
        f"  logs      {log_dir}",
        f"  see them  {tensorboard_command()} --logdir {Path(log_dir).parent}",
    ]
    return "\n".join(lines)


def ranking(statuses: list[MemberStatus], metric: str) -> list[int]:
    """Members, best first: by the val metric at each one's best epoch (accuracy down, MSE up),
    then by val/J; members never validated last."""
    sign = -1 if metric == "acc" else 1

    def key(k: int):
        best = statuses[k].best
        value, J = best.get(f"val/{metric}", math.nan), best.get("val/J", math.nan)
        return (
            not math.isfinite(value),
            sign * value if math.isfinite(value) else 0,
            J if math.isfinite(J) else math.inf,
        )

    return sorted(range(len(statuses)), key=key)


def sweep_rows(
    names: list[str], settings: list[dict[str, object]], statuses: list[MemberStatus], metric: str,
    rises: list[int], test: dict[str, float],
) -> list[dict[str, object]]:  # fmt: skip
    """The sweep's table, best first: one row per member (the test figures of the first only)."""
    rows = []
    order = ranking(statuses, metric)
    for rank, k in enumerate(order, 1):
        status = statuses[k]
        row = {"rank": rank, "member": names[k], **settings[k]}
        row.update({
            "status": status.stopped, "epochs": status.epochs, "best_epoch": status.best_epoch,
            f"val/{metric}": status.best.get(f"val/{metric}", math.nan),
            "val/J": status.best.get("val/J", math.nan),
            "train/J": status.last.get("train/J", math.nan),
            "J_rises": rises[k],
        })  # fmt: skip
        row.update({f"test/{m}": test.get(f"test/{m}", "") if k == order[0] else "" for m in ("J", metric)})
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    """``results.csv``: the table's rows, a header first."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def sweep_table(rows: list[dict[str, object]], metric: str, diverged: list[str], test: dict[str, float],
                seconds: float, folder: Path) -> str:  # fmt: skip
    """What ``mlp-torch sweep`` prints when it is done."""
    shown = ["rank", "member", "status", "epochs", "best_epoch", f"val/{metric}", "val/J", "train/J"]

    def cell(key: str, value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2%}" if key.endswith("/acc") else f"{value:.6g}"
        return str(value)

    table = [shown] + [[cell(key, row[key]) for key in shown] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    lines = [
        "",
        f"mlp-torch sweep: {len(rows)} members, sorted by val/{metric} at each one's best epoch "
        "(lowest val/J)",
    ]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    lines += [f"  {line}" for line in diverged]
    if test:
        figures = ", ".join(f"{k} {cell(k, v)}" for k, v in test.items())
        lines.append(f"  best      {rows[0]['member']}: {figures} (test split; not used to choose)")
    lines += [
        f"  wall time {seconds:.1f} s (training)",
        f"  table     {folder / 'results.csv'}",
        f"  see them  tensorboard --logdir {folder}",
    ]
    return "\n".join(lines)


def write_predictions(path: Path, outputs: torch.Tensor, dm: MLPDataModule) -> None:
    """``predictions.csv`` for what ``predict`` predicted (the test split, or the rows of
    ``--data.predict_file``), ``\\n`` line endings, one row per example; created anew (an existing
    file is never overwritten).

    ``row`` is the example's row in the original data set (its data row in the user's file, header
    not counted, from 0; its index in a built-in set). Classification (``outputs`` ``(n, k)``, the
    sigmoid outputs): ``predicted`` and ``target`` as class names (``target`` blank where a file
    gives none), then ``p_<class>`` per class, the outputs divided by their sum (each row sums to 1;
    the largest is the predicted class). Regression (``outputs`` ``(n, k)`` in the target's units):
    ``predicted_j`` and ``target_j`` per output.
    """
    rows, targets = dm.prediction_targets()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if dm.task == "classification":
            p = outputs / outputs.sum(dim=1, keepdim=True)  # (n, k)
            writer.writerow(["row", "predicted", "target", *(f"p_{c}" for c in dm.classes)])
            for r, k, t, probs in zip(rows, p.argmax(dim=1).tolist(), targets, p.tolist()):
                writer.writerow(
                    [r, dm.classes[k], "" if t is None else dm.classes[t], *(f"{q:.6g}" for q in probs)]
                )
        else:
            k = range(outputs.shape[1])
            writer.writerow(["row", *(f"predicted_{j}" for j in k), *(f"target_{j}" for j in k)])
            for r, p, t in zip(rows, outputs.tolist(), targets):
                known = [f"{v:.6g}" for v in t] if t is not None else [""] * len(k)
                writer.writerow([r, *(f"{v:.6g}" for v in p), *known])
