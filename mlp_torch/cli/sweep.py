"""``mlp-torch sweep``: train a grid of ``mlp-torch fit`` settings at once, the members of one module.

    mlp-torch sweep --config default \\
        --grid "model.optimizer.lr=[0.3, 1, 3, 10]" --grid "seed_everything=[0, 1, 2]"

Every argument but ``--grid``, ``--sweep_dir`` and ``--ckpt_path`` is an argument of ``mlp-torch
fit`` and applies to all members; each ``--grid KEY=[v1, v2, ...]`` (a YAML list; or ``--grid
FILE.yaml``, a mapping of keys to lists) adds a dimension, and the members are all combinations.
Member ``lr=0.3,seed_everything=1`` is the run ``mlp-torch fit ... --model.optimizer.lr 0.3
--seed_everything 1`` would train, update for update: the sweep is one
:class:`~mlp_torch.train.module.MLPModule` of K members (``fit`` is the same module with one).

The sweep's folder (``--sweep_dir``, default ``lightning_logs/sweep_N``) is locked while it trains
and holds the sweep's own ``last.ckpt`` (all members, rewritten every epoch: ``--ckpt_path last``
continues a killed sweep exactly) and, for each member, a folder named by its settings: its
TensorBoard run (so TensorBoard overlays their J curves), its ``config.yaml`` (``mlp-torch fit
--config`` reruns it alone) and ``checkpoints/last.ckpt``, ``best.ckpt`` (lowest ``val/J``), each
a checkpoint its ``fit`` would write (``mlp-torch predict/test --ckpt_path`` them, or ``fit
--ckpt_path MEMBER/checkpoints/last.ckpt`` to continue that member alone). The sweep ends with a
table sorted by the validation metric at each member's best epoch, written as ``results.csv``;
only the first member is then scored on its test split (the test figures choose nothing).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as L
import yaml
from jsonargparse._util import import_object

from mlp_torch.cli.fit import make_cli
from mlp_torch.cli.report import (
    final_metrics,
    hparams_entry,
    log_hparams,
    sweep_rows,
    sweep_table,
    write_rows,
)
from mlp_torch.data import MLPDataModule
from mlp_torch.limits import check_fits_in_memory
from mlp_torch.train.callbacks import Convergence, ConvergenceStop, LearningRateDiagnostics
from mlp_torch.train.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    EpochCheckpoint,
    RunLock,
    read_checkpoint,
    remove_stale_temp_files,
)
from mlp_torch.train.module import MLPModule
from mlp_torch.train.progress import EpochProgressBar

__all__ = ["Grid", "Sweep", "build_sweep", "parse_grid", "run_sweep", "sweep_main"]

SWEEP_FILE = "sweep.yaml"  # in the sweep's folder: its arguments and grid (a folder that holds a sweep)
MEMBER_BYTES = 256 * 1024  # memory per member besides its tensors (its module's parts, files, logs)
FOLDER_ENV = "MLP_TORCH_SWEEP_DIR"  # the folder rank 0 chose, for the other processes of a DDP sweep


@dataclass
class Grid:
    """The swept settings: ``{key: [values]}`` in the order given, and each member's values."""

    axes: dict[str, list]

    @property
    def size(self) -> int:
        return math.prod(len(values) for values in self.axes.values())

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


# ---- the members' settings, from one parse of the arguments and one per value of the grid ------


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    """``{"model.optimizer.init_args.lr": 3.0, ...}``: a config's values by their dotted names."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _set(tree: dict, path: str, value: object) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def _delete(tree: dict, path: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree.get(key, {})
    tree.pop(last, None)


def member_configs(cli, args: list[str], grid: Grid) -> list[dict]:
    """Each member's config (as ``fit``'s ``config.yaml`` holds it), from the base config and,
    for each value of each axis, what parsing ``ARGS --KEY VALUE`` changes: a parse per value
    of the grid, not per member (the parser checks each key and value, and applies the links)."""
    base = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    flat_base = _flat(base)
    changes: dict[str, list[tuple[dict, set]]] = {}
    for key, values in grid.axes.items():
        changes[key] = []
        for value in values:
            cfg = cli.parser.parse_args([*args, f"--{key}", _text(value)])
            flat = _flat(yaml.safe_load(cli.parser.dump(cfg, skip_none=False)))
            changed = {p: v for p, v in flat.items() if flat_base.get(p, object()) != v}
            gone = {p for p in flat_base if p not in flat and not any(q.startswith(p + ".") for q in flat)}
            changes[key].append((changed, gone))
    configs = []
    for choice in itertools.product(*(range(len(v)) for v in grid.axes.values())):
        config = copy.deepcopy(base)
        for key, i in zip(grid.axes, choice):
            changed, gone = changes[key][i]
            for path in gone:
                _delete(config, path)
            for path, value in changed.items():
                _set(config, path, value)
        configs.append(config)
    return configs


def _factory(spec: dict | None):
    """A ``class_path``/``init_args`` spec as the callable LightningCLI makes of it, or ``None``."""
    if not spec:
        return None
    return functools.partial(import_object(spec["class_path"]), **(spec.get("init_args") or {}))


def _shared_section(configs: list[dict], names: list[str], section: str) -> dict:
    values = [json.dumps(c.get(section), sort_keys=True, default=str) for c in configs]
    for name, value, config in zip(names, values, configs):
        if value != values[0]:
            differing = sorted(k for k, v in _flat(config.get(section)).items()
                               if _flat(configs[0].get(section)).get(k) != v)  # fmt: skip
            raise ValueError(
                f"{section}.{differing[0] if differing else ''} differs between members {names[0]} and "
                f"{name}: "
                "a sweep shares it"
            )
    return configs[0].get(section) or {}


def _data(config: dict) -> dict:
    """A member's data settings: its config's, the links applied (``seed``, ``dtype``)."""
    return {**config["data"], "seed": config["seed_everything"], "dtype": config["model"]["dtype"]}


def _model(config: dict, data: MLPDataModule) -> MLPModule:
    """A member's module as ``fit`` builds it: its model settings, the data's widths and task."""
    settings = {k: v for k, v in config["model"].items() if k not in ("optimizer", "lr_scheduler")}
    settings.update(
        n_inputs=data.n_features, n_outputs=data.n_outputs, task=data.task, seed=config["seed_everything"]
    )
    settings.update(target_low=data.target_low, target_high=data.target_high)  # what fit links from the data
    return MLPModule(**settings, optimizer=_factory(config["model"].get("optimizer")),
                     lr_scheduler=_factory(config["model"].get("lr_scheduler")))  # fmt: skip


# ---- the sweep ---------------------------------------------------------------------------------


@dataclass
class Sweep:
    """A built sweep: its module (K members), data and trainer, and what each member was made from."""

    grid: Grid
    names: list[str]
    configs: list[dict]  # each member's config.yaml
    data: list[MLPDataModule]  # each member's data (one object where members share it)
    module: MLPModule
    datamodule: MLPDataModule
    trainer: L.Trainer
    folder: Path
    ckpt_path: Path | None
    checkpoints: list[EpochCheckpoint]  # each member's
    convergence: list[Convergence]


def _next_folder(root: Path) -> Path:
    n = 0
    while (root / f"sweep_{n}").exists():
        n += 1
    return root / f"sweep_{n}"


def _is_other_rank() -> bool:
    """Whether this process is one of the others of a DDP sweep (rank 0 alone writes)."""
    return any(int(os.environ.get(var, "0") or 0) > 0 for var in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def build_sweep(
    args: list[str], grid: Grid, folder: Path | None = None, ckpt_path: str | None = None
) -> Sweep:
    """Build the K members as ``mlp-torch fit ARGS`` would (``ARGS`` plus each one's grid values),
    then their module, data and trainer; nothing is written. ``folder``: where the runs go
    (``None``: the next ``lightning_logs/sweep_N`` under the logger's ``save_dir``);
    ``ckpt_path``: ``"last"`` (or that folder's ``last.ckpt``) continues the sweep in ``folder``."""
    with _quiet("lightning.pytorch", "lightning.fabric"), warnings.catch_warnings():  # no "GPU available"
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = make_cli(args, run=False)
    base = cli.model
    n_params = sum(p.numel() for p in base.net.parameters())
    K = grid.size
    check_fits_in_memory(
        K * (n_params * 8 * 6 + MEMBER_BYTES),  # float64 weights, gradients, optimizer state, copies
        f"a grid of {K:,} members of {n_params:,} parameters each",
        "sweep fewer settings at a time",
    )
    names = [grid.name(member) for member in grid.members]
    configs = member_configs(cli, args, grid)
    shared = {section: _shared_section(configs, names, section)
              for section in ("trainer", "checkpoint", "diagnostics")}  # fmt: skip
    datamodules, seen = [], {}
    for config in configs:
        key = json.dumps(_data(config), sort_keys=True, default=str)
        if key not in seen:
            seen[key] = MLPDataModule(**_data(config))
        datamodules.append(seen[key])
    modules = [_model(config, dm) for config, dm in zip(configs, datamodules)]
    module = MLPModule.of_members(modules, names)
    for k, config in enumerate(configs):
        module.records[k] = {
            "hyper_parameters": {key: config["model"].get(key) for key in ("optimizer", "lr_scheduler")},
            "datamodule_hyper_parameters": dict(config["data"]),
        }
    datamodule = MLPDataModule.of_members(datamodules, names)
    datamodule.members = K
    if cli.trainer.num_devices != 1 and cli.trainer.strategy.__class__.__name__ == "SingleDeviceStrategy":
        raise ValueError(f"a sweep on {cli.trainer.num_devices} devices needs --trainer.strategy ddp")
    if folder is None and _is_other_rank() and FOLDER_ENV in os.environ:
        folder = Path(os.environ[FOLDER_ENV])  # the folder rank 0 chose
    if folder is None:
        save_dir = Path(cli.config.trainer.get("default_root_dir") or ".")
        folder = _next_folder(save_dir / "lightning_logs")
    resume = None
    if ckpt_path is not None:
        resume = folder / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
        state = read_checkpoint(resume)
        saved = (state.get("members") or {}).get("names")
        if saved != names:
            raise CheckpointError(
                f"--ckpt_path {resume}: it is not a checkpoint of this sweep (its members are "
                f"{(saved or ['none'])[:3]}..., this grid's {names[:3]}...); give the arguments and grid it "
                "ran with"
            )
    elif (folder / SWEEP_FILE).exists() and not _is_other_rank():
        raise ValueError(
            f"--sweep_dir {folder} holds a sweep already: give another --sweep_dir, or --ckpt_path last to "
            "continue that one"
        )
    module.member_folders = [folder / name for name in names]
    convergence = [Convergence(**{k: c["convergence"][k] for k in ("threshold", "patience", "enabled")})
                   for c in configs]  # fmt: skip
    checkpoints = [
        _member_checkpoint(shared["checkpoint"], cli, folder / name / "checkpoints").for_member(k, name)
        for k, name in enumerate(names)
    ]
    # the sweep's own last.ckpt, all members at once (what --ckpt_path last continues)
    whole = EpochCheckpoint(
        dirpath=folder, save_top_k=0, monitor=None, save_last=True, enable_version_counter=False
    )
    diagnostics = next(c for c in cli.trainer.callbacks if isinstance(c, LearningRateDiagnostics))
    stop = next(c for c in cli.trainer.callbacks if isinstance(c, ConvergenceStop)).for_members(convergence)
    callbacks = [copy.copy(diagnostics), stop, *checkpoints, whole]
    settings = shared["trainer"]
    if settings.get("enable_progress_bar") is not False:
        callbacks.append(EpochProgressBar())
    trainer = L.Trainer(
        **_trainer_settings(cli),
        logger=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(folder),
        enable_checkpointing=True,
        enable_model_summary=False,
    )
    return Sweep(grid, names, configs, datamodules, module, datamodule, trainer, folder, resume, checkpoints,
                 convergence)  # fmt: skip


def _member_checkpoint(settings: dict, cli, dirpath: Path) -> EpochCheckpoint:
    """A member's checkpoint callback, as ``--checkpoint.*`` configures ``fit``'s, in its folder;
    its best is ``best.ckpt`` unless ``--checkpoint.filename`` says otherwise."""
    settings = {k: v for k, v in settings.items() if k != "dirpath"}
    if settings.get("filename") == cli.parser.get_default("checkpoint.filename"):
        settings["filename"] = "best"
    return EpochCheckpoint(dirpath=dirpath, **settings)


TRAINER_SET_HERE = ("logger", "callbacks", "plugins", "default_root_dir", "enable_checkpointing",
                    "enable_model_summary")  # fmt: skip


def _trainer_settings(cli) -> dict:
    """The trainer's settings as given (instantiated where they are classes), but for those the
    sweep sets itself."""
    given = cli._get(cli.config_init, "trainer", default={})
    return {k: v for k, v in dict(given).items() if k not in TRAINER_SET_HERE}


def run_sweep(sweep: Sweep) -> list[dict[str, object]]:
    """Take the folder, write each member's config.yaml, train, test the best member, write the
    HParams entries and ``results.csv``; returns the table's rows, best first."""
    module, trainer, folder = sweep.module, sweep.trainer, sweep.folder
    writes = not _is_other_rank()
    lock, chosen = None, os.environ.get(FOLDER_ENV)
    try:
        if writes:
            folder.mkdir(parents=True, exist_ok=True)
            lock = RunLock(folder).acquire()
            os.environ[FOLDER_ENV] = str(folder)  # the other processes of a DDP sweep start from here
            remove_stale_temp_files(folder)
            (folder / SWEEP_FILE).write_text(yaml.safe_dump({"grid": sweep.grid.axes}, sort_keys=False))
            for name, config in zip(sweep.names, sweep.configs):
                (folder / name / "checkpoints").mkdir(parents=True, exist_ok=True)
                remove_stale_temp_files(folder / name / "checkpoints")
                (folder / name / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        module.load_native(trainer)  # start-up, not training
        started = time.perf_counter()
        trainer.fit(module, datamodule=sweep.datamodule, ckpt_path=sweep.ckpt_path)
        seconds = time.perf_counter() - started
        if not writes:
            return []
        return _report(sweep, seconds)
    finally:
        if lock is not None:
            lock.release()
        if writes:  # a later sweep in this process chooses its own folder
            if chosen is None:
                os.environ.pop(FOLDER_ENV, None)
            else:
                os.environ[FOLDER_ENV] = chosen


def _report(sweep: Sweep, seconds: float) -> list[dict[str, object]]:
    module, names = sweep.module, sweep.names
    metric = "acc" if module.hparams.task == "classification" else "mse"
    diagnostics = next(c for c in sweep.trainer.callbacks if isinstance(c, LearningRateDiagnostics))
    settings = [{key: _text(v) for key, v in member.items()} for member in sweep.grid.members]
    rises = [len(r) for r in diagnostics.member_increases]
    order = sweep_rows(names, settings, module.status, metric, rises, {})
    best = names.index(order[0]["member"])
    test = _test_member(sweep, best)
    rows = sweep_rows(names, settings, module.status, metric, rises, test)
    for k, (name, config) in enumerate(zip(names, sweep.configs)):
        status = module.status[k]
        hp = hparams_entry(module, k, config["data"], sweep.trainer.max_epochs, sweep.convergence[k])
        hp.update(
            {
                key: _text(v) if not isinstance(v, (int, float)) else v
                for key, v in sweep.grid.members[k].items()
            }
        )
        metrics = final_metrics(status.last, status.best, test if k == best else {})
        log_hparams(sweep.folder / name, hp, metrics, status.epochs)
    write_rows(sweep.folder / "results.csv", rows)
    diverged = [f"{names[k]}: {s.why}" for k, s in enumerate(module.status) if s.stopped == "diverged"]
    print(sweep_table(rows, metric, diverged, test, seconds, sweep.folder))
    return rows


def _test_member(sweep: Sweep, k: int) -> dict[str, float]:
    """Member ``k``'s test figures at its best epoch, from its ``best.ckpt`` as ``fit`` tests
    its best checkpoint (``{}`` without a test split or a best checkpoint)."""
    best = sweep.checkpoints[k].best_model_path
    data = sweep.data[k]
    if not best or not data.x_test.shape[-2]:
        return {}
    module = _model(sweep.configs[k], data)
    with _quiet("lightning.pytorch", "lightning.fabric"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")  # a test needs none
        device = sweep.trainer.strategy.root_device
        tester = L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                           enable_model_summary=False, plugins=[AtomicCheckpointIO()],
                           accelerator="gpu" if device.type == "cuda" else "cpu", devices=1)  # fmt: skip
        results = tester.test(module, datamodule=data, ckpt_path=best, verbose=False)
    return dict(results[0]) if results else {}


def sweep_main(args: list[str]) -> int:
    """``mlp-torch sweep [fit arguments] --grid KEY=[v1, ...] ... [--sweep_dir DIR] [--ckpt_path last]``."""
    specs, rest, folder, ckpt = [], [], None, None
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--grid", "--sweep_dir", "--ckpt_path"):
            if not eq:
                value = next(it, None)
                if value is None:
                    raise ValueError(f"{name} needs a value")
            if name == "--grid":
                specs.append(value)
            elif name == "--sweep_dir":
                folder = Path(value)
            else:
                ckpt = value
        elif arg in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            rest.append(arg)
    grid = parse_grid(specs)
    if ckpt is not None and folder is None and ckpt == "last":
        raise ValueError("--ckpt_path last continues the sweep in --sweep_dir: give --sweep_dir too")
    sweep = build_sweep(rest, grid, folder, ckpt)
    print(f"sweep: {len(sweep.names)} members of {sweep.data[0].describe()}")
    rows = run_sweep(sweep)
    if rows and all(s.stopped == "diverged" for s in sweep.module.status):
        return 1
    return 0
