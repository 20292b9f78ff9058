"""``mlp-torch fit/validate/test/predict``: the LightningCLI (:mod:`mlp_torch.cli.command` dispatches).

It only wires: the model (:class:`MLPModule`), the data (:class:`MLPDataModule`), the notes'
learning-rate callbacks, checkpoints and the TensorBoard logger. ``fit`` ends by testing the best
checkpoint (lowest ``val/J``) and printing a summary a person can act on.

Bad input of any kind ends with one line ``mlp-torch: error: ...`` and exit code 2; a training
run that fails (non-finite J, failed cross-check) ends with one line and exit code 1.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from argparse import ArgumentError
from dataclasses import dataclass
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mlp_torch.cli import PROG
from mlp_torch.cli.report import final_metrics, fit_summary, hparams_entry, log_hparams, write_predictions
from mlp_torch.data import MLPDataModule
from mlp_torch.train.callbacks import ConvergenceStop, LearningRateDiagnostics
from mlp_torch.train.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    EpochCheckpoint,
    RunLock,
    check_class_paths,
    check_training_state,
    newest_hpc_checkpoint,
    read_checkpoint,
    remove_stale_temp_files,
)
from mlp_torch.train.module import DEFAULT_ALPHA, DEFAULT_LR, MLPModule, default_optimizer
from mlp_torch.train.progress import EpochProgressBar

__all__ = ["MLPCLI", "make_cli"]


print0 = rank_zero_only(print)  # under DDP every process runs the CLI: one of them speaks


class MLPCLI(LightningCLI):
    """LightningCLI with the data linked into the model, the notes' callbacks always on, and
    checkpoints and run folders handled by :mod:`mlp_torch.train.checkpoints`.

    ``dry_run=True``: parse, build and check as the subcommand would, and stop before it
    creates, locks or writes anything. ``callbacks``: more trainer callbacks, given as objects
    (:func:`mlp_torch.fit` passes its :class:`~mlp_torch.train.callbacks.History`). After ``fit``,
    ``result`` holds what the summary says (``test``, ``best``, ``log_dir``, ``stopped``, ...)."""

    def __init__(
        self, *args, dry_run: bool = False, callbacks: list[Callback] | None = None, **kwargs
    ) -> None:
        self.dry_run = dry_run
        self.extra_callbacks = list(callbacks or [])
        self.result: dict | None = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LearningRateDiagnostics, "diagnostics")
        parser.add_lightning_class_args(ConvergenceStop, "convergence")
        parser.add_lightning_class_args(EpochCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/J",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}",
                "checkpoint.enable_version_counter": False,  # the run folder is ours: last.ckpt is rewritten
                "model.optimizer": {
                    "class_path": "mlp_torch.optim.Momentum",
                    "init_args": {"lr": DEFAULT_LR, "alpha": DEFAULT_ALPHA},
                },
            }
        )
        for name in ("n_features", "n_outputs", "task", "target_low", "target_high"):
            target = "n_inputs" if name == "n_features" else name
            parser.link_arguments(f"data.{name}", f"model.{target}", apply_on="instantiate")
        parser.link_arguments("model.dtype", "data.dtype")
        parser.link_arguments("seed_everything", "model.seed")
        parser.link_arguments("seed_everything", "data.seed")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The trainer, with :class:`EpochProgressBar` as its progress bar unless the bar is off
        (``--trainer.enable_progress_bar false``) or another one is given."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = [*(config.get("callbacks") or []), *self.extra_callbacks]
        kwargs["callbacks"] = callbacks
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            kwargs["callbacks"] = [*callbacks, EpochProgressBar()]
        plugins = config.get("plugins") or []
        kwargs["plugins"] = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse; resolve and read ``--ckpt_path``; let the checkpoint's settings fill in what
        the command line and ``--config`` leave open; check every value; plan the run folder.
        Nothing is built or written yet.

        ``last`` is the newest ``last.ckpt`` of a run under the logger's folder (by default
        ``<default_root_dir>/lightning_logs``), ``best`` that run's best checkpoint, ``hpc`` the
        newest ``hpc_ckpt_N.ckpt`` in ``default_root_dir`` (also picked up without
        ``--ckpt_path`` under SLURM, as Lightning does). Every one is read by
        :func:`read_checkpoint`, which runs no code.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        _logger_under_default_root_dir(config)
        if not subcommand:
            return
        if config.get("weights_only") is False:
            raise ValueError(
                "--weights_only false is refused: mlp-torch reads every checkpoint with "
                "torch.load(weights_only=True), so that no code from a checkpoint can run"
            )
        ckpt = _resolve_ckpt_path(subcommand, config)
        self._checkpoint = None
        if ckpt is not None:
            self._checkpoint = read_checkpoint(ckpt)
            defaults = _checkpoint_defaults(self._checkpoint, ckpt, self._subcommand_parsers[subcommand])
            self._subcommand_parsers[subcommand].set_defaults(defaults)
            super().parse_arguments(parser, args)  # the command line and --config win
            config = self.config[subcommand]
            _logger_under_default_root_dir(config)
            config.ckpt_path = str(ckpt)
        elif subcommand != "fit":
            raise ValueError(
                f"{subcommand} needs --ckpt_path (a checkpoint file, last or best): without one it "
                "would evaluate untrained, initial weights"
            )
        _check_settings(subcommand, config, self._checkpoint)
        self._run = _plan_run(subcommand, config, ckpt)
        if self._run.config_filename:
            self.save_config_kwargs["config_filename"] = self._run.config_filename

    def _parse_ckpt_path(self) -> None:
        """Replaces LightningCLI's: that one lets the checkpoint's hyper-parameters override the
        command line; here they were applied as defaults in :meth:`parse_arguments`."""

    def after_instantiate_classes(self) -> None:
        """Every checkpoint records the optimizer and scheduler (the module leaves these callables
        out of its hyper-parameters) and the data's settings (``datamodule_hyper_parameters``), so
        that ``--ckpt_path`` alone rebuilds the run."""
        if not self.subcommand:
            return
        self._dump_config()
        model, data = self.config_dump.get("model", {}), self.config_dump.get("data", {})
        record = {
            "hyper_parameters": {k: model.get(k) for k in ("optimizer", "lr_scheduler")},
            "datamodule_hyper_parameters": dict(data),
        }
        self.model.records = [record]
        saved = (self._checkpoint or {}).get("hyper_parameters", {}).get("optimizer") or {}
        self.trainer.callbacks.append(_CommandLineWins(record, saved.get("init_args") or {}))

    def _run_subcommand(self, subcommand: str) -> None:
        if self.dry_run:
            self._check_run(subcommand)
            return
        try:
            super()._run_subcommand(subcommand)
        finally:  # the run folder is free again once the command is done, however it ended
            lock = getattr(self, "_lock", None)
            if lock is not None:
                lock.release()

    def _check_checkpoint_fits(self) -> None:
        """The checkpoint's weights must be those of the configured network, and its training
        state one that restores into this run (:func:`checkpoints.check_training_state`)."""
        state = self._checkpoint
        if state is None:
            return
        where = f"--ckpt_path {self.config[self.subcommand].ckpt_path}"
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items() if k.startswith("net.")}
        found = {k: tuple(v.shape) for k, v in state["state_dict"].items() if k.startswith("net.")}
        if found != expected:
            trained_on = (state.get("datamodule_hyper_parameters") or {}).get("dataset")
            on = f" (trained on {trained_on})" if trained_on else ""
            missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
            if missing or extra:
                what = (
                    f"lack {', '.join(missing)}, which the configured network has"
                    if missing
                    else f"have {', '.join(extra)}, which the configured network lacks"
                )
                raise ValueError(
                    f"{where}: its weights{on} {what}; give a checkpoint that mlp-torch fit wrote for "
                    "this network"
                )
            weights = sorted(k for k in found if k.endswith("weight"))
            sizes = [found[k][1] for k in weights[:1]] + [found[k][0] for k in weights]
            raise ValueError(
                f"{where}: its network has sizes {sizes}{on}, "
                f"the configured one {self.model.net.sizes} (data {self.datamodule.dataset}); "
                "leave out the options that change the data or the network, or give a matching checkpoint"
            )
        flat = torch.cat([p.detach().reshape(-1) for p in self.model.net.parameters()])
        check_training_state(
            state, where, self.subcommand, self.trainer, self.model.optimizer_factory or default_optimizer,
            self.model.scheduler_factory, flat,
        )  # fmt: skip

    def _check_optimizer(self) -> None:
        """Build the optimizer and scheduler once on a dummy parameter: a bad lr or alpha fails
        here, before the run folder is touched, not in the middle of ``fit``."""
        dummy = [torch.nn.Parameter(torch.zeros(1))]
        optimizer = self.model.optimizer_factory(dummy) if self.model.optimizer_factory else None
        if optimizer is not None and self.model.scheduler_factory is not None:
            self.model.scheduler_factory(optimizer)

    def _check_monitor(self) -> None:
        """``--checkpoint.monitor`` must be a metric the module logs (Lightning finds out only
        after the first epoch, with a traceback)."""
        monitor = getattr(self.trainer.checkpoint_callback, "monitor", None)
        if monitor is None:
            return
        hp = self.model.hparams
        logged = ["train/J", "train/cost", "train/l1", "train/l2", "lr", "diagnostics/J_rose", "val/J"]
        logged.append("val/acc" if hp.task == "classification" else "val/mse")
        logged += [f"sparsity/layer_{i}" for i in range(len(self.model.net.sizes) - 1)]
        if hp.crosscheck_every_n_steps:
            logged.append("gradcheck/max_rel_err")
        if monitor not in logged:
            raise ValueError(
                f"--checkpoint.monitor={monitor!r} is not a metric of this run; use one of: "
                + ", ".join(logged)
            )

    def _take_run_folder(self) -> None:
        """Create (new run) or lock (resume) the run folder, now that every value was checked."""
        run = self._run
        if run.folder is None or self.trainer.global_rank != 0:  # DDP: rank 0 holds the run
            return
        if run.new:
            try:
                run.folder.mkdir(parents=True)
            except FileExistsError:
                raise ValueError(
                    f"run folder {run.folder} was created by another process at the same time; run again"
                ) from None
        self._lock = RunLock(run.folder).acquire()
        remove_stale_temp_files(run.folder / "checkpoints")

    def _check_run(self, subcommand: str) -> None:
        """Every check of ``subcommand`` that needs the built model, data and trainer; nothing
        is written."""
        self._check_checkpoint_fits()
        if subcommand == "fit":
            self.model.check_world_size(self.trainer.world_size)  # before DDP starts the other processes
            self._check_optimizer()
            self._check_monitor()

    def before_validate(self) -> None:
        self._check_run("validate")

    def before_test(self) -> None:
        self._check_run("test")

    def before_predict(self) -> None:
        self._check_run("predict")

    def before_fit(self) -> None:
        self._check_run("fit")
        self._take_run_folder()
        self.model.load_native(self.trainer)  # start-up, not training
        self._started = time.perf_counter()
        print0(f"data: {self.datamodule.describe()}")
        n_params = sum(p.numel() for p in self.model.net.parameters())
        print0(
            f"model: sizes {self.model.net.sizes} ({n_params} parameters), cost {self.model.hparams.cost}, "
            f"batch_size {self.model.hparams.batch_size}, grad_source {self.model.hparams.grad_source}"
        )

    def after_fit(self) -> None:
        trainer, model = self.trainer, self.model
        seconds = time.perf_counter() - self._started
        convergence = next(c for c in trainer.callbacks if isinstance(c, ConvergenceStop))
        if trainer.interrupted:
            why = "interrupted"
        elif convergence.reason:
            why = convergence.reason
        else:
            why = f"reached max_epochs={trainer.max_epochs}"
        fit_metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
        }
        data = self.config_dump.get("data", {})
        hp = hparams_entry(model, 0, data, trainer.max_epochs, convergence.settings[0])
        # Read before testing: loading the best checkpoint restores the callbacks' older state.
        diagnostics = next(c for c in trainer.callbacks if isinstance(c, LearningRateDiagnostics))
        rises, largest_rise = len(diagnostics.increases), diagnostics.largest_rise
        epochs = trainer.current_epoch
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        results = trainer.test(model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
        test = results[0] if results else {}
        log_dir = trainer.log_dir or "."  # (a collective under DDP: every process asks)
        if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero:
            log_hparams(log_dir, hp, final_metrics(fit_metrics, test), epochs)
            trainer.logger.log_hyperparams(hp)  # hparams.yaml
            trainer.logger.finalize("success")
        full = model.hparams.batch_size == "full"
        print0(
            fit_summary(test, rises, largest_rise, epochs, why, full, best, seconds, trainer.log_dir or ".")
        )
        self.result = {"test": {k: float(v) for k, v in test.items()}, "best": best, "log_dir": log_dir,
                       "stopped": why, "epochs": epochs, "seconds": seconds}  # fmt: skip

    def after_predict(self) -> None:
        """Write the predictions (of the test split, or of --data.predict_file's rows) to
        ``predictions.csv`` in the run's log folder
        (``predictions-1.csv``, ``-2``, ... when earlier ones are there: none is overwritten)."""
        batches = self.trainer.predict_loop.predictions or []
        if not batches or not self.trainer.is_global_zero:  # under DDP every rank predicts the whole split
            return
        outputs = torch.cat([b.reshape(len(b), -1) for b in batches]).cpu()  # (n, k)
        folder = Path(self.trainer.log_dir or ".")
        path, n = folder / "predictions.csv", 0
        while path.exists():
            n += 1
            path = folder / f"predictions-{n}.csv"
        write_predictions(path, outputs, self.datamodule)
        print(
            f"mlp-torch predict: {len(outputs)} predictions of {self.datamodule.predicting} written to {path}"
        )


# Settings a checkpoint does not set: linked from the data or from --seed_everything.
NOT_FROM_CHECKPOINT = {
    "model": {"n_inputs", "n_outputs", "task", "target_low", "target_high", "seed"},
    "data": {"dtype", "seed", "predict_file"},
}
# the model's and the data's class paths a checkpoint may name (those of earlier layouts too)
CHECKPOINT_CLASSES = {
    "model": ("mlp_torch.MLPModule", "mlp_torch.train.module.MLPModule", "mlp_torch.module.MLPModule"),
    "data": (
        "mlp_torch.MLPDataModule",
        "mlp_torch.data.MLPDataModule",
        "mlp_torch.data.module.MLPDataModule",
    ),
}
DEFAULT_SAVE_DIR = "."  # the logger's save_dir unless given: then runs go under default_root_dir


def _tensorboard_init(config) -> Namespace | None:
    """The configured TensorBoardLogger's ``init_args``, or ``None`` (no logger, or another)."""
    logger = config.trainer.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if len(logger) == 1 else None
    if not isinstance(logger, Namespace) or not str(logger.get("class_path")).endswith("TensorBoardLogger"):
        return None
    return logger.init_args


def _logger_under_default_root_dir(config) -> None:
    """Lightning's convention: the logger's folder is ``default_root_dir`` unless one is given."""
    init = _tensorboard_init(config)
    root_dir = config.trainer.get("default_root_dir")
    if init is not None and root_dir and str(init.save_dir) == DEFAULT_SAVE_DIR:
        init.save_dir = str(root_dir)


def _runs_root(config) -> Path | None:
    init = _tensorboard_init(config)
    return None if init is None else Path(init.save_dir) / (init.get("name") or "lightning_logs")


def _resolve_ckpt_path(subcommand: str, config) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names (``last``, ``best``, ``hpc`` or a file), or
    under SLURM without one the newest ``hpc_ckpt_N.ckpt`` in ``default_root_dir``."""
    ckpt = config.get("ckpt_path")
    root_dir = Path(config.trainer.get("default_root_dir") or ".")
    if ckpt is None or ckpt == "hpc":
        hpc = newest_hpc_checkpoint(root_dir)
        if ckpt is None:
            if hpc is not None and SLURMEnvironment.detect():
                print(f"SLURM job: resuming from {hpc}, the newest hpc checkpoint", file=sys.stderr)
                return hpc
            return None
        if hpc is None:
            raise CheckpointError(
                f"--ckpt_path hpc: no hpc_ckpt_N.ckpt in {root_dir} (--trainer.default_root_dir)"
            )
        return hpc
    if ckpt not in ("last", "best"):
        return Path(ckpt)
    root = _runs_root(config)
    if root is None:
        raise ValueError(
            f"--ckpt_path {ckpt} needs the TensorBoard logger's run folders; give a checkpoint file"
        )
    lasts = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise CheckpointError(
            f"--ckpt_path {ckpt}: no run with a last.ckpt under {root} (*/checkpoints); "
            "run `mlp-torch fit` first (with the same --trainer.default_root_dir) or give a checkpoint file"
        )
    if ckpt == "last":
        return lasts[-1]
    bests = sorted(lasts[-1].parent.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not bests:
        raise CheckpointError(
            f"--ckpt_path best: the newest run, {lasts[-1].parent.parent}, has no best*.ckpt"
        )
    return bests[-1]


def _checkpoint_defaults(state: dict, ckpt: Path, parser) -> dict:
    """The model's and the data's settings saved in a checkpoint, as parser defaults (so that the
    command line and ``--config`` override them). Class paths must be allowed ones."""
    where = f"--ckpt_path {ckpt}"
    defaults = {}
    seed = None
    for key, saved in (
        ("model", state.get("hyper_parameters")),
        ("data", state.get("datamodule_hyper_parameters")),
    ):
        if not saved:
            continue
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where}: its {key} settings are not a mapping")
        saved = {k: v for k, v in saved.items() if k != "_instantiator"}
        class_path = saved.pop("_class_path", CHECKPOINT_CLASSES[key][0])
        if class_path not in CHECKPOINT_CLASSES[key]:
            expected = CHECKPOINT_CLASSES[key][0]
            raise CheckpointError(f"{where}: its {key} class {class_path!r} is not {expected}")
        check_class_paths(saved, where)
        seed = saved.get("seed", seed) if seed is None else seed
        for name, value in saved.items():
            if name in NOT_FROM_CHECKPOINT[key]:
                continue
            try:
                parser.get_default(f"{key}.{name}")
            except Exception:
                raise CheckpointError(
                    f"{where}: its setting {key}.{name} is not an option of mlp-torch"
                ) from None
            defaults[f"{key}.{name}"] = value
    if seed is not None:
        defaults["seed_everything"] = seed
    return defaults


SUPPORTED_PRECISIONS = (None, "32-true", "32", 32)


def _check_settings(subcommand: str, config, state: dict | None) -> None:
    """Trainer values that Lightning would only reject with a traceback, or too late."""
    trainer = config.trainer
    if subcommand != "predict" and (config.get("data") or {}).get("predict_file") is not None:
        raise ValueError(
            f"--data.predict_file is for mlp-torch predict (it names rows to predict); {subcommand} uses "
            "--data.dataset: leave --data.predict_file out"
        )
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (isinstance(max_epochs, bool) or max_epochs < -1 or max_epochs == 0):
        raise ValueError(f"--trainer.max_epochs={max_epochs!r} must be an integer >= 1 (or -1: no limit)")
    every = trainer.get("check_val_every_n_epoch")
    if every is not None and (isinstance(every, bool) or every < 1):
        raise ValueError(f"--trainer.check_val_every_n_epoch={every!r} must be an integer >= 1 (or null)")
    precision = trainer.get("precision")
    if precision not in SUPPORTED_PRECISIONS:
        raise ValueError(
            f"--trainer.precision {precision} is not supported: mlp-torch computes in --model.dtype "
            "(float32 or float64) itself; leave --trainer.precision out (or give 32-true), and give "
            "--model.dtype float64 for 64-bit"
        )
    if subcommand == "fit" and state is not None and max_epochs not in (None, -1):
        done = _completed_epochs(state)
        if max_epochs < done:
            raise ValueError(
                f"--trainer.max_epochs={max_epochs} is below the checkpoint's {done} completed epochs; "
                f"give --trainer.max_epochs {done} or more to resume"
            )


def _completed_epochs(state: dict) -> int:
    """The epochs a checkpoint has completed (it is written at the end of epoch ``epoch``)."""
    epoch = state.get("epoch", -1)
    return epoch + 1 if isinstance(epoch, int) else 0


@dataclass
class _RunPlan:
    """Where a command writes: ``folder`` is created (``new``) or locked by ``fit``."""

    folder: Path | None = None
    new: bool = False
    config_filename: str | None = None


def _plan_run(subcommand: str, config, ckpt: Path | None) -> _RunPlan:
    """Point the logger at the run folder: a checkpoint's own run (``fit`` continues it and adds
    ``config-resume-K.yaml``; ``validate/test/predict`` write into its ``<subcommand>/``), else
    the logger's ``version`` if given (a new folder for ``fit``), else the next ``version_N``."""
    init, root = _tensorboard_init(config), _runs_root(config)
    if init is None:
        return _RunPlan()
    run = _run_folder_of(ckpt)
    if run is not None:
        init.save_dir, init.name, init.version = str(run.parent.parent), run.parent.name, run.name
        if subcommand != "fit":
            init.sub_dir = subcommand
            return _RunPlan()
        resumes = len(list(run.glob("config-resume-*.yaml")))
        return _RunPlan(run, False, f"config-resume-{resumes + 1}.yaml")
    if init.get("version") is not None:  # --trainer.logger.version, as Lightning names it
        version = init.version
        init.version = version if isinstance(version, str) else f"version_{version}"
        if subcommand == "fit" and (root / init.version).exists():
            raise ValueError(
                f"run folder {root / init.version} exists already: give another "
                "--trainer.logger.version, or --ckpt_path to resume that run"
            )
    else:
        versions = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
        init.version = f"version_{max(versions, default=-1) + 1}"
    return _RunPlan(root / init.version, subcommand == "fit", None)


def _run_folder_of(ckpt: Path | None) -> Path | None:
    """The run folder a checkpoint lies in, ``RUN/checkpoints/NAME.ckpt``, wherever the run was
    moved or copied to (a ``version_N`` folder, or any folder holding its ``config.yaml``), else
    ``None``."""
    if ckpt is None or ckpt.parent.name != "checkpoints":
        return None
    run = ckpt.parent.parent
    return run if run.name.startswith("version_") or (run / "config.yaml").is_file() else None


class _CommandLineWins(Callback):
    """On a resume, optimizer settings given now that differ from the checkpoint's (``saved``)
    replace the restored ones in the optimizer's parameter groups: the command line wins there
    too, as it does for every other setting."""

    def __init__(self, record: dict[str, dict], saved: dict) -> None:
        self.record, self.saved = record, saved

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.saved or self.record["hyper_parameters"].get("lr_scheduler"):
            return  # a fresh run, or a scheduler that owns the rate
        given = (self.record["hyper_parameters"].get("optimizer") or {}).get("init_args") or {}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for name, value in given.items():
                    if name in group and name in self.saved and value != self.saved[name]:
                        group[name] = value


UNRELATED = (  # Lightning's console lines that say nothing about this run, or nothing new
    "GPU available: ",  # the device in use is in the run's config.yaml
    "TPU available: ",
    "\U0001f4a1 Tip: ",  # the litlogger advertisement
    "Seed set to ",  # the seed is in config.yaml
    "`Trainer.fit` stopped: ",  # fit's summary says why it stopped
)


def _drop_unrelated(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(UNRELATED)


def quiet_lightning() -> None:
    """Drop Lightning's unrelated tips and device lines; its warnings that matter stay."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logger = logging.getLogger(name)
        if _drop_unrelated not in logger.filters:
            logger.addFilter(_drop_unrelated)
    # a resumed run writes into its own checkpoint folder on purpose
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


def make_cli(
    args: list[str] | None, run: bool = True, dry_run: bool = False, callbacks: list[Callback] | None = None
) -> MLPCLI:
    """The ``mlp-torch`` LightningCLI on ``args`` (``None``: ``sys.argv``). ``run=False`` only
    builds the model, data and trainer (no subcommand), as ``scripts/cv.py`` does; ``dry_run``
    makes every check a subcommand makes before it writes anything, then stops (as
    ``--print_config`` needs: it prints only a config that would run)."""
    quiet_lightning()
    try:
        return _make_cli(args, run, dry_run, callbacks)
    except MisconfigurationException as err:  # Lightning's word for a bad trainer or callback value
        raise ValueError(str(err)) from None
    except ArgumentError as err:
        linked = re.search(r"argument (\S+) --> (\S+): ", str(err))
        if linked is None:
            raise
        source, target = linked.groups()
        raise ValueError(
            f"--{target} is set from --{source} (they are linked): give --{source} instead"
        ) from None


def _make_cli(args: list[str] | None, run: bool, dry_run: bool, callbacks: list[Callback] | None) -> MLPCLI:
    return MLPCLI(
        MLPModule,
        MLPDataModule,
        seed_everything_default=0,
        trainer_defaults={
            "max_epochs": 200,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,  # the "model:" line says what the summary table would
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": ".", "default_hp_metric": False},
            },
        },
        parser_kwargs={
            "prog": PROG,
            "exit_on_error": False,
            "description": "Train the textbook sigmoid MLP. All subcommands: `mlp-torch --help`.",
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
        dry_run=dry_run,
        callbacks=callbacks,
    )
