"""Training from Python: :func:`fit` is ``mlp-torch fit`` as a function, :func:`sweep` is
``mlp-torch sweep``.

    >>> import mlp_torch
    >>> run = mlp_torch.fit(dataset="iris", max_epochs=30)    # doctest: +SKIP
    >>> run.test["test/acc"], run.log_dir                      # doctest: +SKIP
    >>> grid = mlp_torch.sweep({"lr": [0.3, 1, 3]}, dataset="iris", max_epochs=30)  # doctest: +SKIP
    >>> grid.rows[0]["member"], grid.folder                    # doctest: +SKIP

The same engine as the command line runs (LightningCLI: its defaults, the data's widths and task
linked into the model, the progress bar, the learning-rate diagnostics, the convergence stop,
checkpoints and TensorBoard logs under ``lightning_logs/``); a setting is any option of
``mlp-torch fit --help``, by its last name when that is unique or by its dotted name.
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from argparse import ArgumentError
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlp_torch.cli.command import check_config_files, resolve_configs

__all__ = ["FitResult", "SweepResult", "fit", "option_names", "sweep"]

# Options linked from another one (as the command line links them): set the source instead.
_LINKED = {
    "model.n_inputs": "data.dataset",
    "model.n_outputs": "data.dataset",
    "model.task": "data.task",
    "model.target_low": "data.dataset",
    "model.target_high": "data.dataset",
    "model.seed": "seed_everything",
    "data.seed": "seed_everything",
    "data.dtype": "model.dtype",
}


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        module: the trained :class:`~mlp_torch.MLPModule`, holding the tested weights (the best
            checkpoint by ``val/J``; the last ones when no checkpoint was written).
        data: the :class:`~mlp_torch.MLPDataModule`, set up (its splits, scaling and classes).
        log_dir: the run folder (``lightning_logs/version_N``): TensorBoard logs, ``config.yaml``,
            ``checkpoints/``.
        best_path: the best checkpoint, or ``None``.
        test: the test figures of the tested weights (``test/acc`` and ``test/J``, or ``test/mse``).
        history: per epoch: ``epoch`` and ``train/J``, ``val/J``, ``val/acc`` (or ``val/mse``), ``lr``.
        stopped: why training stopped (converged, reached ``max_epochs``, interrupted).
        epochs: the epochs trained; seconds: the training's wall time.
    """

    module: object
    data: object
    log_dir: Path
    best_path: Path | None
    test: dict[str, float]
    history: dict[str, list[float]] = field(repr=False)
    stopped: str
    epochs: int
    seconds: float

    def __repr__(self) -> str:
        figures = ", ".join(f"{k} {v:.4g}" for k, v in self.test.items())
        return f"FitResult({figures}; {self.epochs} epochs, {self.stopped}; log_dir={str(self.log_dir)!r})"


def fit(config: str | Path | None = None, **settings) -> FitResult:
    """Train as ``mlp-torch fit`` does, from Python, and return the result.

    Args:
        config: a shipped config by name (``"notes"``; ``mlp-torch configs`` lists them) or a YAML file.
        **settings: any option of ``mlp-torch fit``, by its last name where that is unique
            (``dataset="iris"``, ``max_epochs=30``, ``batch_size=16``, ``lr=0.5``,
            ``hidden_sizes=[30]``, ``seed_everything=1``, ``default_root_dir="runs"``,
            ``enable_progress_bar=False``, ``ckpt_path="last"``) or by its dotted name through a dict
            (``fit(**{"model.optimizer.lr": 0.5})``). Values are numbers, strings, booleans, None, or
            lists and dicts of them (a class as ``{"class_path": ..., "init_args": {...}}``).

    Raises:
        ValueError: an unknown, ambiguous or linked setting, or a value the command line would
            refuse (the message names it), bad data or a bad checkpoint.
        NonFiniteObjectiveError, CrossCheckError: a run that failed (as the command's exit code 1).
    """
    from mlp_torch.cli.fit import make_cli  # imports Lightning
    from mlp_torch.train.callbacks import History

    args = ["fit", *_arguments(config, settings)]
    history = History()
    with _as_value_errors():
        cli = make_cli(args, callbacks=[history])
    result = cli.result
    if result is None:  # (not reached: fit always ends in after_fit or an exception)
        raise RuntimeError("fit ended without a result")
    return FitResult(
        module=cli.model,
        data=cli.datamodule,
        log_dir=Path(result["log_dir"]),
        best_path=Path(result["best"]) if result["best"] else None,
        test=result["test"],
        history=history.history,
        stopped=result["stopped"],
        epochs=result["epochs"],
        seconds=result["seconds"],
    )


@dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes:
        rows: the sweep's table (``results.csv``), best first: ``rank``, ``member``, its grid
            values, ``status``, ``epochs``, ``best_epoch``, ``val/...``, ``train/J``, ``J_rises``, and
            the test figures of the best member only.
        folder: the sweep's folder (``lightning_logs/sweep_N``): one run folder per member.
        module: the :class:`~mlp_torch.MLPModule` of the K members, at their last weights.
    """

    rows: list[dict]
    folder: Path
    module: object

    def __repr__(self) -> str:
        best = self.rows[0]["member"] if self.rows else None
        return f"SweepResult({len(self.rows)} members, best {best!r}; folder={str(self.folder)!r})"


def sweep(
    grid: dict[str, list], config: str | Path | None = None, sweep_dir: str | Path | None = None, **settings
) -> SweepResult:
    """Train a grid of settings at once as ``mlp-torch sweep`` does, from Python.

    Args:
        grid: each swept setting (named as in :func:`fit`) and its values, e.g.
            ``{"lr": [0.3, 1, 3], "seed_everything": [0, 1]}`` (6 members).
        config, **settings: what every member shares, as in :func:`fit`.
        sweep_dir: the sweep's folder (default: the next ``lightning_logs/sweep_N``).

    Raises:
        ValueError: as :func:`fit`, and for a grid that is not ``{name: [values, ...]}``.
    """
    from mlp_torch.cli.sweep import build_sweep, parse_grid, run_sweep  # imports Lightning

    if not isinstance(grid, dict) or not grid:
        raise ValueError(
            f"grid={grid!r} must be a dict of each swept setting's values, e.g. {{'lr': [0.3, 1, 3]}}"
        )
    specs = []
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid[{name!r}]={values!r} must be a list of the values to try")
        specs.append(f"{_option(name)}={_as_argument(name, list(values))}")
    args = _arguments(config, settings)
    with _as_value_errors():
        built = build_sweep(args, parse_grid(specs), None if sweep_dir is None else Path(sweep_dir))
        rows = run_sweep(built)
    return SweepResult(rows=rows, folder=built.folder, module=built.module)


def _arguments(config: str | Path | None, settings: dict) -> list[str]:
    """The command line's arguments for ``config`` and ``settings`` (a shipped config's name
    resolved to its file, every config file checked)."""
    args = [] if config is None else ["--config", str(config)]
    for name, value in settings.items():
        args += [f"--{_option(name)}", _as_argument(name, value)]
    args = resolve_configs(args)
    check_config_files(args)
    return args


@contextmanager
def _as_value_errors():
    """The command line's argument errors as ``ValueError``, and none of its own warnings."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")  # inside Lightning itself
            yield
    except (ArgumentError, TypeError, KeyError) as err:
        raise ValueError(" ".join(str(err).split()) or type(err).__name__) from None


def option_names() -> dict[str, list[str]]:
    """Each setting's last name -> the dotted ``mlp-torch fit`` options it may mean, from the
    signatures the command line is built from (the trainer, the model, the data, the callbacks,
    the shipped optimizers)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mlp_torch.data import MLPDataModule
    from mlp_torch.model.optim import GradientDescent, HeavyBall, Momentum
    from mlp_torch.train.callbacks import ConvergenceStop, LearningRateDiagnostics
    from mlp_torch.train.checkpoints import EpochCheckpoint
    from mlp_torch.train.module import MLPModule

    sections = {
        "trainer": [Trainer],
        "model": [MLPModule],
        "model.optimizer": [GradientDescent, Momentum, HeavyBall],
        "data": [MLPDataModule],
        "diagnostics": [LearningRateDiagnostics],
        "convergence": [ConvergenceStop],
        "checkpoint": [EpochCheckpoint, ModelCheckpoint],
    }
    names: dict[str, list[str]] = {"seed_everything": ["seed_everything"], "ckpt_path": ["ckpt_path"]}
    for section, classes in sections.items():
        for cls in classes:
            for p in inspect.signature(cls.__init__).parameters.values():
                dotted = f"{section}.{p.name}"
                if p.name in ("self", "params") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if dotted not in _LINKED and dotted not in names.setdefault(p.name, []):
                    names[p.name].append(dotted)
    return {name: where for name, where in names.items() if where}


def _option(name: str) -> str:
    """The dotted option a setting names; ``ValueError`` if it is unknown, ambiguous or linked."""
    if name in _LINKED:
        raise ValueError(
            f"{name} is set from {_LINKED[name]} (they are linked): give {_LINKED[name]} instead"
        )
    if "." in name:
        return name  # the command line checks it
    names = option_names()
    where = names.get(name)
    if where is None:
        close = sorted(n for n in names if name in n or n in name)[:6]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"fit() got an unknown setting {name!r}{hint}: give an option of `mlp-torch fit --help`, "
            f"by its last name or dotted, e.g. fit(**{{'model.optimizer.lr': 0.5}})"
        )
    if len(where) > 1:
        raise ValueError(
            f"fit() setting {name!r} is ambiguous: it may mean {', '.join(where)}; give one of those"
        )
    return where[0]


def _as_argument(name: str, value) -> str:
    """``value`` as the command line would be given it (JSON for lists, dicts and None)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # the option's own check refuses it by name
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(
            f"fit() setting {name}={value!r}: give a number, a string, a boolean, None, or lists and "
            "dicts of them (a class as {'class_path': ..., 'init_args': {...}})"
        ) from None
