"""``mlp-torch fit/validate/test/predict``: the LightningCLI (:mod:`mlp_torch.command` dispatches).

It only wires: the model (:class:`MLPModule`), the data (:class:`MLPDataModule`), the notes'
learning-rate callbacks, checkpoints and the TensorBoard logger. ``fit`` ends by testing the best
checkpoint (lowest ``val/J``) and printing a summary a person can act on.

Bad input of any kind ends with one line ``mlp-torch: error: ...`` and exit code 2; a training
run that fails (non-finite J, failed cross-check) ends with one line and exit code 1.
"""

from __future__ import annotations

import csv
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mlp_torch.callbacks import ConvergenceStop, LearningRateDiagnostics
from mlp_torch.command import PROG, main, run_reporting_errors
from mlp_torch.data import MLPDataModule, from_unit_range
from mlp_torch.module import DEFAULT_ALPHA, DEFAULT_LR, MLPModule
from mlp_torch.progress import EpochProgressBar

__all__ = ["MLPCLI", "main", "make_cli", "read_checkpoint", "run_reporting_errors"]  # main: mlp_torch.command


print0 = rank_zero_only(print)  # under DDP every process runs the CLI: one of them speaks


class MLPCLI(LightningCLI):
    """LightningCLI with the data linked into the model and the notes' callbacks always on."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LearningRateDiagnostics, "diagnostics")
        parser.add_lightning_class_args(ConvergenceStop, "convergence")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/J",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}",
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
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            kwargs["callbacks"] = [*callbacks, EpochProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then resolve and read ``--ckpt_path`` before anything is built or written.

        ``last`` means the newest ``last.ckpt`` under the logger's folder, ``best`` that run's
        checkpoint with the lowest ``val/J``; ``fit`` then keeps logging into that run's version
        folder (Lightning alone would look only in a new one).
        The file is read without executing code; LightningCLI then takes the model's
        hyper-parameters from it.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt = config.get("ckpt_path") if config else None
        if ckpt is None or ckpt == "hpc":
            return
        if ckpt in ("last", "best"):
            init = getattr(config.trainer.logger, "init_args", None)
            root = Path(init.save_dir) / (init.get("name") or "lightning_logs") if init else None
            root = root or Path(config.trainer.default_root_dir or ".") / "lightning_logs"
            found = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise ValueError(
                    f"--ckpt_path {ckpt}: no last.ckpt under {root}/version_*/checkpoints; "
                    "run `mlp-torch fit` first or give a checkpoint file"
                )
            config.ckpt_path = ckpt = str(found[-1] if ckpt == "last" else best_checkpoint_beside(found[-1]))
            if subcommand == "fit" and init:
                init.version = found[-1].parent.parent.name
        self._checkpoint = read_checkpoint(ckpt)

    def _check_checkpoint_fits(self) -> None:
        """The checkpoint's weights must have the shapes of the configured network."""
        state = getattr(self, "_checkpoint", None)
        if state is None:
            return
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items() if k.startswith("net.")}
        found = {k: tuple(v.shape) for k, v in state["state_dict"].items() if k.startswith("net.")}
        if found != expected:
            sizes = [found[k][1] for k in sorted(found) if k.endswith("weight")][:1]
            sizes += [found[k][0] for k in sorted(found) if k.endswith("weight")]
            raise ValueError(
                f"--ckpt_path {self.config[self.subcommand].ckpt_path}: its network has sizes {sizes}, "
                f"the configured one {self.model.net.sizes}; use the config the checkpoint was trained with"
            )

    def before_validate(self) -> None:
        self._check_checkpoint_fits()

    def before_test(self) -> None:
        self._check_checkpoint_fits()

    def before_predict(self) -> None:
        self._check_checkpoint_fits()

    def before_fit(self) -> None:
        self._check_checkpoint_fits()
        self.model.check_world_size(self.trainer.world_size)  # before DDP starts the other processes
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
        hp = run_hparams(trainer, model, self.datamodule)
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") or None
        results = trainer.test(model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
        metrics = results[0] if results else {}
        if isinstance(trainer.logger, TensorBoardLogger):
            final = {f"hp/{k.replace('/', '_')}": float(v) for k, v in {**fit_metrics, **metrics}.items()}
            log_hparams(trainer.logger, hp, final)
            trainer.logger.finalize("success")
        log_dir = trainer.log_dir or "."
        lines = ["", "mlp-torch fit: done"]
        for name in ("test/acc", "test/mse", "test/J"):
            if name in metrics:
                value = metrics[name]
                lines.append(f"  {name:<9} {value:.2%}" if name == "test/acc" else f"  {name:<9} {value:.6g}")
        diagnostics = next(c for c in trainer.callbacks if isinstance(c, LearningRateDiagnostics))
        if diagnostics.increases:
            hint = (
                "batch GD has no sampling noise: the rate is too large"
                if model.hparams.batch_size == "full"
                else "mini-batch noise if by a few %; the rate too large if by much"
            )
            lines.append(
                f"  J rose    in {len(diagnostics.increases)} of {trainer.current_epoch} epochs, by at most "
                f"{diagnostics.largest_rise:.1%} ({hint})"
            )
        lines += [
            f"  epochs    {trainer.current_epoch} ({why})",
            f"  tested    {'best checkpoint ' + best if best else 'final weights'}",
            f"  wall time {seconds:.1f} s",
            f"  logs      {log_dir}",
            f"  see them  {_tensorboard()} --logdir {Path(log_dir).parent}",
        ]
        print0("\n".join(lines))

    def after_predict(self) -> None:
        """Write the test split's predictions to ``predictions.csv`` in the run's log folder."""
        batches = self.trainer.predict_loop.predictions or []
        if not batches or not self.trainer.is_global_zero:  # under DDP every rank predicts the whole split
            return
        outputs = torch.cat([b.reshape(len(b), -1) for b in batches]).cpu()  # (n, k)
        path = Path(self.trainer.log_dir or ".") / "predictions.csv"
        write_predictions(path, outputs, self.datamodule)
        print(f"mlp-torch predict: {len(outputs)} predictions of the test split written to {path}")


DATA_HPARAMS = ("dataset", "target", "scaling", "val_fraction", "test_fraction", "n_samples", "noise",
                "cv_folds", "cv_fold")  # fmt: skip


def run_hparams(trainer: Trainer, model: MLPModule, dm: MLPDataModule) -> dict[str, int | float | str | bool]:
    """What tells runs apart, for TensorBoard's HParams tab: the model's settings (``seed`` too),
    the optimizer and the learning-rate schedule with their settings, the data set and how it is
    split and scaled, ``max_epochs`` and the convergence stop."""
    hp = {k: v for k, v in model.hparams.items() if not k.startswith("_")}  # not LightningCLI's
    hp.update(model.optimizer_hparams())
    scheduler = model.lr_schedulers()
    hp["lr_scheduler"] = type(scheduler).__name__ if scheduler is not None else "None"
    if scheduler is not None:
        settings = scheduler.state_dict()  # e.g. gamma; not its counters
        hp.update({f"lr_scheduler.{k}": v for k, v in settings.items() if k not in ("last_epoch", "verbose")})
    hp.update({name: getattr(dm, name) for name in DATA_HPARAMS})
    hp["max_epochs"] = trainer.max_epochs
    convergence = next(c for c in trainer.callbacks if isinstance(c, ConvergenceStop))
    hp.update({f"convergence.{k}": getattr(convergence, k) for k in ("enabled", "threshold", "patience")})
    scalar = (int, float, str, bool)
    return {k: v if isinstance(v, scalar) else str(v) for k, v in hp.items() if not k.startswith("_")}


@rank_zero_only  # the other processes' loggers write nothing
def log_hparams(logger: TensorBoardLogger, hp: dict, metrics: dict[str, float]) -> None:
    """The run's hyper-parameters and final metrics for the HParams tab.

    No experiment summary is written: TensorBoard takes the hparam and metric lists of the first
    run that has one for all runs (another task's metrics then go missing, and no hparam
    "differs"); without one it builds both lists from all runs, as the tab should.
    """
    from torch.utils.tensorboard.summary import hparams

    logger.log_metrics(metrics)
    _, start, end = hparams(hp, metrics)
    writer = logger.experiment._get_file_writer()
    writer.add_summary(start)
    writer.add_summary(end)
    logger.hparams.update(hp)  # hparams.yaml


def write_predictions(path: Path, outputs: torch.Tensor, dm: MLPDataModule) -> None:
    """``predictions.csv`` for the test split, ``\\n`` line endings, one row per example.

    ``row`` is the example's row in the original data set (its data row in the user's file, header
    not counted; its index in a built-in set). Classification (``outputs`` ``(n, k)``, the sigmoid
    outputs): ``predicted`` and ``target`` as class names, then ``p_<class>`` per class, the
    outputs divided by their sum (each row sums to 1; the largest is the predicted class).
    Regression (``outputs`` ``(n, k)`` in the target's units): ``predicted_j`` and ``target_j``
    per output.
    """
    rows = dm.rows_test.cpu().tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if dm.task == "classification":
            p = outputs / outputs.sum(dim=1, keepdim=True)  # (n, k)
            writer.writerow(["row", "predicted", "target", *(f"p_{c}" for c in dm.classes)])
            for r, k, t, probs in zip(rows, p.argmax(dim=1).tolist(), dm.labels_test.tolist(), p.tolist()):
                writer.writerow([r, dm.classes[k], dm.classes[t], *(f"{q:.6g}" for q in probs)])
        else:
            k = range(outputs.shape[1])
            target = from_unit_range(dm.y_test.cpu(), dm.target_low, dm.target_high)  # (n, k)
            writer.writerow(["row", *(f"predicted_{j}" for j in k), *(f"target_{j}" for j in k)])
            for r, p, t in zip(rows, outputs.tolist(), target.tolist()):
                writer.writerow([r, *(f"{v:.6g}" for v in p), *(f"{v:.6g}" for v in t)])


def best_checkpoint_beside(last: Path) -> Path:
    """The best checkpoint (lowest ``val/J``) of the run whose ``last.ckpt`` is ``last``: its
    ModelCheckpoint state records it."""
    state = read_checkpoint(str(last))
    for key, value in state.get("callbacks", {}).items():
        recorded = value.get("best_model_path") if key.startswith("ModelCheckpoint") else None
        if recorded and (last.parent / Path(recorded).name).is_file():
            return last.parent / Path(recorded).name
    raise FileNotFoundError(
        f"--ckpt_path best: {last} names no best checkpoint beside it (was val/J monitored?); "
        "give a checkpoint file or use --ckpt_path last"
    )


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint without executing code (``weights_only=True``); ``ValueError`` if it is
    missing, unreadable, or not a checkpoint of this package."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, another format, pickled code, ...
        raise ValueError(
            f"--ckpt_path {path}: not a readable checkpoint ({type(err).__name__}); "
            "give a last.ckpt or best-*.ckpt from lightning_logs/version_N/checkpoints"
        ) from None
    if not isinstance(state, dict) or not any(k.startswith("net.") for k in state.get("state_dict", {})):
        raise ValueError(f"--ckpt_path {path}: not an mlp-torch checkpoint (no network weights in it)")
    return state


def _tensorboard() -> str:
    beside = Path(sys.executable).parent / "tensorboard"
    return str(beside) if beside.exists() else (shutil.which("tensorboard") or "tensorboard")


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


def make_cli(args: list[str] | None, run: bool = True) -> MLPCLI:
    """The ``mlp-torch`` LightningCLI on ``args`` (``None``: ``sys.argv``). ``run=False`` only
    builds the model, data and trainer (no subcommand), as ``scripts/cv.py`` does."""
    quiet_lightning()
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
    )


if __name__ == "__main__":
    sys.exit(main())
