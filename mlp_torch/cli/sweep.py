"""``mlp-torch sweep``: train a grid of ``mlp-torch fit`` settings at once, as one stacked network.

    mlp-torch sweep --config configs/default.yaml \\
        --grid "model.optimizer.lr=[0.3, 1, 3, 10]" --grid "seed_everything=[0, 1, 2]"

Every argument but ``--grid`` and ``--sweep_dir`` is an argument of ``mlp-torch fit`` and applies
to all members; each ``--grid KEY=[v1, v2, ...]`` (a YAML list; or ``--grid FILE.yaml``, a
mapping of keys to lists) adds a dimension, and the members are all combinations. Member
``lr=0.3,seed_everything=1`` is the run ``mlp-torch fit ... --model.optimizer.lr 0.3
--seed_everything 1`` would train, update for update (see :mod:`mlp_torch.train.sweep_module`).

In the sweep's folder (``--sweep_dir``, default ``lightning_logs/sweep_N``) each member has its own
TensorBoard run named by its settings (so TensorBoard overlays their J curves), its ``config.yaml``
(``mlp-torch fit --config`` reruns it alone) and ``checkpoints/last.ckpt``, ``best.ckpt``
(lowest ``val/J``). The sweep ends with a table sorted by the validation metric at each member's
best epoch, written as ``results.csv``; only the first member is then scored on its test split
(the test figures choose nothing).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch import LightningDataModule
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from mlp_torch.data import Batch, MLPDataModule
from mlp_torch.data.module import _one_batch_loader
from mlp_torch.train.callbacks import ConvergenceStop
from mlp_torch.train.sweep_module import Convergence, SweepModule

__all__ = ["Grid", "StackedData", "build_sweep", "parse_grid", "speed_ratios", "sweep_main"]

SPLITS = ("train", "val", "test")


@dataclass
class Grid:
    """The swept settings: ``{key: [values]}`` in the order given, and each member's values."""

    axes: dict[str, list]

    @property
    def members(self) -> list[dict[str, object]]:
        return [dict(zip(self.axes, values)) for values in itertools.product(*self.axes.values())]

    def name(self, member: dict[str, object]) -> str:
        """``lr=0.3,seed_everything=1``: each key by its last part (whole if two share one)."""
        last = [k.rsplit(".", 1)[-1] for k in self.axes]
        short = {k: s if last.count(s) == 1 else k for k, s in zip(self.axes, last)}
        text = ",".join(f"{short[k]}={_text(v)}" for k, v in member.items())
        return re.sub(r"[^\w.,=+\-\[\]]", "_", text)


def _text(value: object) -> str:
    """A grid value as a command-line value (YAML/JSON for lists and mappings)."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value).replace(" ", "")
    return str(value)


def parse_grid(specs: list[str]) -> Grid:
    """The grid of ``--grid`` values: ``KEY=[v1, v2, ...]`` or a YAML file ``{KEY: [v1, ...]}``."""
    if not specs:
        raise ValueError(
            'give at least one --grid KEY=[v1, v2, ...], e.g. --grid "model.optimizer.lr=[0.3, 1]"'
        )
    axes: dict[str, list] = {}
    for spec in specs:
        if "=" in spec:
            key, _, text = spec.partition("=")
            try:
                entries = {key.strip(): yaml.safe_load(text)}
            except yaml.YAMLError as err:
                raise ValueError(f"--grid {spec}: the values are not YAML ({_first_line(err)})") from None
        elif spec.endswith((".yaml", ".yml")):
            try:
                entries = yaml.safe_load(Path(spec).read_text())
            except (OSError, yaml.YAMLError) as err:
                raise ValueError(f"--grid {spec}: cannot read the grid file ({_first_line(err)})") from None
            if not isinstance(entries, dict):
                raise ValueError(
                    f"--grid {spec}: the file must map keys to lists, e.g. 'model.l2: [0, 1e-4]'"
                )
        else:
            raise ValueError(
                f"--grid {spec}: write KEY=[v1, v2, ...] (e.g. model.optimizer.lr=[0.3, 1]) or a .yaml file"
            )
        for key, values in entries.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
                raise ValueError(f"--grid {spec}: {key!r} is not a setting's name like model.optimizer.lr")
            if not isinstance(values, list) or not values:
                raise ValueError(
                    f"--grid {spec}: the values of {key} must be a non-empty list like [0.3, 1, 3]"
                )
            if key in axes:
                raise ValueError(f"--grid {spec}: {key} is already swept; give each key once")
            if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
                raise ValueError(f"--grid {spec}: the values of {key} repeat: {values}")
            axes[key] = values
    return Grid(axes)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class StackedData(LightningDataModule):
    """The members' data as one: each split shared ``(n, features)`` when all members use the same
    data settings, else stacked ``(K, n, features)`` (the splits must then have equal sizes).

    Args:
        datamodules: each member's :class:`MLPDataModule` (the same object where shared).
    """

    def __init__(self, datamodules: list[MLPDataModule], names: list[str]) -> None:
        super().__init__()
        self.datamodules = datamodules
        self.shared = all(dm is datamodules[0] for dm in datamodules)
        if not self.shared:
            for split in SPLITS:
                sizes = [len(getattr(dm, f"x_{split}")) for dm in datamodules]
                for name, n in zip(names, sizes):
                    if n != sizes[0]:
                        raise ValueError(
                            f"the {split} split has {sizes[0]} examples in member {names[0]} but {n} in "
                            f"{name}: members with their own data must have splits of equal sizes"
                        )
        self.splits: dict[str, Batch] = {split: self._stack(split) for split in SPLITS}

    def _stack(self, split: str) -> Batch:
        first = self.datamodules[0]
        if self.shared:
            return Batch(getattr(first, f"x_{split}"), getattr(first, f"y_{split}"))
        return Batch(*(torch.stack([getattr(dm, f"{v}_{split}") for dm in self.datamodules]) for v in "xy"))

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.splits = {k: Batch(b.x.to(device), b.y.to(device)) for k, b in self.splits.items()}

    def train_dataloader(self):
        return _one_batch_loader(*self.splits["train"])

    def val_dataloader(self):
        return _one_batch_loader(*self.splits["val"])

    def test_dataloader(self):
        return _one_batch_loader(*self.splits["test"])


@dataclass
class Sweep:
    """A built sweep: the system, its data, its trainer and what each member was made from."""

    grid: Grid
    names: list[str]
    clis: list  # each member's MLPCLI (run=False): its model, data, trainer and config
    module: SweepModule
    data: StackedData
    trainer: L.Trainer
    folder: Path


@contextlib.contextmanager
def _quiet(*names: str):
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _next_folder(root: Path) -> Path:
    n = 0
    while (root / f"sweep_{n}").exists():
        n += 1
    return root / f"sweep_{n}"


def build_sweep(args: list[str], grid: Grid, folder: Path | None = None) -> Sweep:
    """Build every member as ``mlp-torch fit`` would (``args`` plus its grid values), then the
    stacked system, data and trainer. ``folder``: where the runs go (``None``: the next
    ``lightning_logs/sweep_N`` under the logger's ``save_dir``)."""
    from mlp_torch.cli.fit import make_cli

    members = grid.members
    names = [grid.name(m) for m in members]
    clis = []
    with _quiet("lightning.pytorch", "lightning.fabric"):  # not K times "GPU available: ..."
        for member in members:
            extra = [a for key, value in member.items() for a in (f"--{key}", _text(value))]
            clis.append(make_cli([*args, *extra], run=False))
    first = clis[0]
    trainer_settings = {}
    for key in ("max_epochs", "accelerator", "devices", "enable_progress_bar", "logger"):
        values = [json.dumps(c.config.trainer.get(key), default=str, sort_keys=True) for c in clis]
        for name, value in zip(names, values):
            if value != values[0]:
                raise ValueError(
                    f"trainer.{key} differs between members {names[0]} and {name}: a sweep shares it"
                )
        trainer_settings[key] = first.config.trainer.get(key)
    if first.trainer.num_devices != 1:
        raise ValueError(
            f"a sweep trains on one device, not {first.trainer.num_devices}: set --trainer.devices 1"
        )
    datamodules, seen = [], {}
    for cli in clis:
        key = json.dumps(cli.config.data.as_dict(), sort_keys=True, default=str)
        datamodules.append(seen.setdefault(key, cli.datamodule))
    data = StackedData(datamodules, names)
    if folder is None:
        save_dir = Path(getattr(first.trainer.logger, "save_dir", None) or ".")
        folder = _next_folder(save_dir / "lightning_logs")
    loggers = None
    if first.trainer.logger is not None:
        loggers = [TensorBoardLogger(folder, name="", version=n, default_hp_metric=False) for n in names]
    convergence = []
    for cli in clis:
        stop = next(c for c in cli.trainer.callbacks if isinstance(c, ConvergenceStop))
        convergence.append(Convergence(stop.threshold, stop.patience, stop.enabled))
    module = SweepModule([c.model for c in clis], names, convergence, loggers)
    trainer = L.Trainer(
        max_epochs=trainer_settings["max_epochs"],
        accelerator=trainer_settings["accelerator"],
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(trainer_settings["enable_progress_bar"]),
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        default_root_dir=str(folder),
    )
    return Sweep(grid, names, clis, module, data, trainer, folder)


def _checkpoint(cli, state: dict[str, Tensor], epoch: int) -> dict:
    """A checkpoint ``mlp-torch validate/test/predict --ckpt_path`` reads, with the member's
    hyper-parameters, as ``fit`` writes them."""
    return {
        "state_dict": {f"net.{k}": v.cpu() for k, v in state.items()},
        "hyper_parameters": dict(cli.model.hparams),
        "epoch": epoch,
        "pytorch-lightning_version": L.__version__,
    }


def metric_name(sweep: Sweep) -> str:
    return "acc" if sweep.module.shared["task"] == "classification" else "mse"


def ranking(sweep: Sweep) -> list[int]:
    """Members, best first: by the val metric at each one's best epoch (accuracy down, MSE up),
    then by val/J; members never validated last."""
    metric = metric_name(sweep)
    sign = -1 if metric == "acc" else 1

    def key(k: int):
        best = sweep.module.status[k].best
        value = best.get(f"val/{metric}", math.nan)
        J = best.get("val/J", math.nan)
        return (
            not math.isfinite(value),
            sign * value if math.isfinite(value) else 0,
            J if math.isfinite(J) else math.inf,
        )

    return sorted(range(len(sweep.names)), key=key)


def run_sweep(sweep: Sweep) -> list[dict[str, object]]:
    """Train, write each member's checkpoints and hparams, score the best member on its test
    split; returns the table's rows, best first (also written to ``results.csv``)."""
    module, trainer = sweep.module, sweep.trainer
    sweep.folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trainer.fit(module, datamodule=sweep.data)
    seconds = time.perf_counter() - started
    metric = metric_name(sweep)
    order = ranking(sweep)
    last = [module.net.member_state(k) for k in range(len(sweep.names))]
    test = _test_best(sweep, order[0])
    rows = []
    for rank, k in enumerate(order, 1):
        status = module.status[k]
        row = {"rank": rank, "member": sweep.names[k]}
        row.update({key: _text(v) for key, v in sweep.grid.members[k].items()})
        row.update({
            "status": status.stopped, "epochs": status.epochs, "best_epoch": status.best_epoch,
            f"val/{metric}": status.best.get(f"val/{metric}", math.nan),
            "val/J": status.best.get("val/J", math.nan),
            "train/J": status.last.get("train/J", math.nan),
        })  # fmt: skip
        row.update({f"test/{m}": test.get(f"test/{m}", "") if k == order[0] else "" for m in ("J", metric)})
        rows.append(row)
    _write_members(sweep, last, test)
    with (sweep.folder / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _print_table(sweep, rows, test, seconds)
    return rows


def _test_best(sweep: Sweep, best: int) -> dict[str, float]:
    """The best member's test figures at its best epoch (``{}`` without a test split)."""
    module = sweep.module
    if not len(sweep.data.splits["test"].x) or not module.status[best].best:
        return {}
    params = list(module.net.parameters())
    kept = [p.detach().clone() for p in params]
    names = [f"layers.{i}.{kind}" for kind in ("weight", "bias") for i in range(len(module.net.W))]
    state = module.best_state[best]
    with torch.no_grad():
        for p, name in zip(params, names):  # the order of net.parameters(): W.0, ..., b.0, ...
            p[best] = state[name].to(p.device)
        figures = module.evaluate(*sweep.data.splits["test"])
        for p, p0 in zip(params, kept):
            p.copy_(p0)
    return {f"test/{k}": v[best].item() for k, v in figures.items()}


def _write_members(sweep: Sweep, last: list[dict[str, Tensor]], test: dict[str, float]) -> None:
    """Each member's config.yaml, checkpoints and HParams entry, in its own folder."""
    module = sweep.module
    best_state = module.best_state
    for k, (name, cli) in enumerate(zip(sweep.names, sweep.clis)):
        folder = sweep.folder / name
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        status = module.status[k]
        torch.save(_checkpoint(cli, last[k], status.epochs), folder / "checkpoints" / "last.ckpt")
        torch.save(_checkpoint(cli, best_state[k], status.best_epoch), folder / "checkpoints" / "best.ckpt")
        (folder / "config.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
        if module.member_loggers is not None:
            hp = {
                key: v if isinstance(v, (int, float, str, bool)) else str(v)
                for key, v in cli.model.hparams.items()
            }
            hp = {key: v for key, v in hp.items() if not key.startswith("_")}
            hp.update(
                {
                    key: _text(v) if not isinstance(v, (int, float)) else v
                    for key, v in sweep.grid.members[k].items()
                }
            )
            figures = {**status.last, **status.best}
            figures.update(test if k == ranking(sweep)[0] else {})
            final = {f"hp/{key.replace('/', '_')}": float(v) for key, v in figures.items()}
            logger = module.member_loggers[k]
            logger.log_hyperparams(hp, metrics=final)
            logger.finalize("success")


def _print_table(sweep: Sweep, rows: list[dict[str, object]], test: dict[str, float], seconds: float) -> None:
    metric = metric_name(sweep)
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
    module = sweep.module
    for k, status in enumerate(module.status):
        if status.stopped == "diverged":
            lines.append(f"  {sweep.names[k]}: {status.why}")
    if test:
        figures = ", ".join(f"{k} {cell(k, v)}" for k, v in test.items())
        lines.append(f"  best      {rows[0]['member']}: {figures} (test split; not used to choose)")
    lines += [
        f"  wall time {seconds:.1f} s (training)",
        f"  table     {sweep.folder / 'results.csv'}",
        f"  see them  tensorboard --logdir {sweep.folder}",
    ]
    print("\n".join(lines))


def sweep_main(args: list[str]) -> int:
    """``mlp-torch sweep [fit arguments] --grid KEY=[v1, ...] ... [--sweep_dir DIR]``."""
    specs, rest, folder = [], [], None
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--grid", "--sweep_dir"):
            if not eq:
                value = next(it, None)
                if value is None:
                    raise ValueError(f"{name} needs a value")
            if name == "--grid":
                specs.append(value)
            else:
                folder = Path(value)
        elif arg in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            rest.append(arg)
    grid = parse_grid(specs)
    sweep = build_sweep(rest, grid, folder)
    print(f"sweep: {len(sweep.names)} members of {sweep.data.datamodules[0].describe()}")
    run_sweep(sweep)
    return 0


# ---- speed: a sweep against one fit (scripts/benchmark.py calls this) ---------------------------

SPEED_GRIDS = {  # 32 members of the default network, data, batch size and epochs
    "shared seed": [
        "model.optimizer.lr=[1, 2, 3, 5]",
        "model.optimizer.alpha=[0.5, 0.9]",
        "model.l2=[0, 1e-4, 3e-4, 1e-3]",
    ],  # fmt: skip
    "own seed": ["seed_everything=[" + ", ".join(str(s) for s in range(32)) + "]"],
}


def speed_ratios(
    args: list[str] | None = None, grids: dict[str, list[str]] | None = None
) -> dict[str, float]:
    """Wall time of the training phase (``Trainer.fit``, not process start-up) of one
    ``mlp-torch fit ARGS`` and of each sweep of ``grids`` (default :data:`SPEED_GRIDS`) on the same
    ARGS, measured one after the other in this process, and each sweep's ratio to the fit.

    Returns ``{"fit": s, "shared seed": s, "shared seed ratio": r, ...}``.
    """
    import tempfile

    from mlp_torch.cli.fit import make_cli

    args = [*(args or []), "--trainer.enable_progress_bar", "false"]
    grids = SPEED_GRIDS if grids is None else grids
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with _quiet("lightning.pytorch", "lightning.fabric"):
            cli = make_cli(
                [*args, "--trainer.default_root_dir", tmp, "--trainer.logger.save_dir", tmp], run=False
            )
        started = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        out["fit"] = time.perf_counter() - started
        out["fit epochs"] = cli.trainer.current_epoch
        for name, specs in grids.items():
            sweep = build_sweep(args, parse_grid(specs), Path(tmp) / name.replace(" ", "_"))
            started = time.perf_counter()
            sweep.trainer.fit(sweep.module, datamodule=sweep.data)
            out[name] = time.perf_counter() - started
            out[f"{name} members"] = len(sweep.names)
            out[f"{name} epochs"] = sweep.trainer.current_epoch
            out[f"{name} ratio"] = out[name] / out["fit"]
    return out
