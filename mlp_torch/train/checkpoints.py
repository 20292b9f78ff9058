"""Checkpoints and run folders: read without running code, written atomically, one process per run.

* :func:`read_checkpoint` is the one reader of every checkpoint ``mlp-torch`` loads, whichever way
  it is named (``--ckpt_path FILE|last|best|hpc``, or Lightning's SLURM pickup of
  ``hpc_ckpt_*.ckpt``): ``torch.load(weights_only=True)``, which cannot execute code.
  :class:`AtomicCheckpointIO` routes Lightning's own loads through it, whatever ``weights_only``
  Lightning asks for.
* :func:`check_class_paths`: class paths taken from a checkpoint must name an optimizer of
  :mod:`mlp_torch.optim` or :mod:`torch.optim`, or a scheduler of :mod:`torch.optim.lr_scheduler`
  (:data:`ALLOWED_CLASS_MODULES`); nothing else is ever imported because a checkpoint says so.
* :func:`atomic_save`: a temporary file beside the target, flushed and fsynced, then
  ``os.replace`` onto it, so a kill at any moment leaves the old file or the new one, never a
  partial one (Lightning's own write goes through ``TMPDIR`` and is a copy across file systems).
  :class:`AtomicCheckpointIO` serializes each checkpoint at once and leaves the write to one
  background thread, in order.
* :class:`EpochCheckpoint`: ``ModelCheckpoint`` whose ``last.ckpt`` holds the latest completed
  epoch (Lightning 2.6 rewrites it only when a new best is saved).
* :class:`RunLock`: a run folder is locked while a process trains in it; a second one is refused
  with the holder's pid and host.
"""

from __future__ import annotations

import copy
import fcntl
import io
import os
import re
import socket
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

__all__ = [
    "ALLOWED_CLASS_MODULES",
    "AtomicCheckpointIO",
    "CheckpointError",
    "EpochCheckpoint",
    "RunLock",
    "RunLockedError",
    "atomic_save",
    "atomic_write",
    "check_class_paths",
    "check_training_state",
    "newest_hpc_checkpoint",
    "read_checkpoint",
    "remove_stale_temp_files",
]

# module -> the base class every class taken from a checkpoint must derive from
ALLOWED_CLASS_MODULES: dict[str, type] = {
    "mlp_torch.optim": torch.optim.Optimizer,  # the public name of mlp_torch.model.optim
    "mlp_torch.model.optim": torch.optim.Optimizer,
    "torch.optim": torch.optim.Optimizer,
    "torch.optim.lr_scheduler": torch.optim.lr_scheduler.LRScheduler,
}
TEMP_SUFFIX = ".tmp"  # temporary files are hidden: ".<target name>.<random>.tmp"
LOCK_FILE = ".lock"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class RunLockedError(CheckpointError):
    """The run folder is held by another process."""


def read_checkpoint(path: str | Path, what: str = "--ckpt_path") -> dict[str, Any]:
    """Load a checkpoint of this package without executing code (``weights_only=True``).

    Raises :class:`CheckpointError` if it is missing, a folder, unreadable (truncated, another
    format, pickled code) or holds no network weights (e.g. a bare ``state_dict``).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path}: is a folder; give a .ckpt file in it, e.g. last.ckpt")
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, another format, pickled code, ...
        raise CheckpointError(
            f"{what} {path}: not a readable checkpoint ({type(err).__name__}); "
            "give a last.ckpt or best-*.ckpt from lightning_logs/version_N/checkpoints"
        ) from None
    if isinstance(state, dict) and any(str(k).startswith("net.") for k in state):
        raise CheckpointError(
            f"{what} {path}: holds only a state_dict (weights), not a training checkpoint; give a .ckpt "
            "written by mlp-torch fit, or load it in Python with MLPModule(...).load_state_dict"
        )
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{what} {path}: not an mlp-torch checkpoint (no network weights in it)")
    if not any(str(k).startswith("net.") for k in state["state_dict"]):
        raise CheckpointError(f"{what} {path}: not an mlp-torch checkpoint (no network weights in it)")
    if "pytorch-lightning_version" not in state:
        raise CheckpointError(
            f"{what} {path}: has weights but no training state (no 'pytorch-lightning_version'); "
            "give a .ckpt written by mlp-torch fit"
        )
    for name, value in state["state_dict"].items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise CheckpointError(f"{what} {path}: its entry {name!r} is not a tensor of weights")
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{what} {path}: its weights are not finite (NaN or inf in {name}); give a checkpoint "
                "from before training diverged"
            )
    return state


def check_training_state(state: dict[str, Any], where: str, stage: str, trainer, optimizer_factory,
                         scheduler_factory, flat: Tensor) -> None:  # fmt: skip
    """Raise :class:`CheckpointError` unless ``state``'s training state can be restored into this
    run: its loop counters have the shape of ``trainer``'s (``stage``: ``"fit"``, ``"validate"``,
    ``"test"``, ``"predict"``); with ``"fit"`` its optimizer's class is the one configured and its
    state makes a step of a stand-in for the flat parameter tensor ``flat``, its scheduler's
    state loads, and each callback's state loads into a copy of that callback. Nothing of the run
    is touched: a resume that would fail half-way is refused before anything is written."""
    loops = state.get("loops")
    loop = f"{stage}_loop"
    if loops is not None:
        if not isinstance(loops, dict) or not isinstance(loops.get(loop), dict):
            raise CheckpointError(
                f"{where}: its loop state has no mapping {loop!r}; give a .ckpt written by mlp-torch fit"
            )
        fresh = getattr(trainer, loop if stage != "validate" else "validate_loop").state_dict()
        wrong = _first_mismatch(fresh, loops[loop], loop)
        if wrong:
            raise CheckpointError(
                f"{where}: its loop state is not one mlp-torch writes ({wrong}); "
                "give a .ckpt written by mlp-torch fit"
            )
    if stage != "fit":
        return
    saved = (state.get("hyper_parameters") or {}).get("optimizer")
    dummy = torch.nn.Parameter(torch.zeros_like(flat, device="cpu"))
    optimizer = optimizer_factory([dummy])
    saved_class = saved.get("class_path") if isinstance(saved, dict) else None
    given = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    if saved_class and saved_class.rsplit(".", 1)[-1] != type(optimizer).__name__:
        raise CheckpointError(
            f"{where}: the run trained with {saved_class}, not {given}: a resume continues the same "
            "optimizer (its state is that class's); leave --model.optimizer out, or start a new run "
            "(leave out --ckpt_path)"
        )
    states = state.get("optimizer_states")
    if not isinstance(states, list) or len(states) != 1 or not isinstance(states[0], dict):
        raise CheckpointError(
            f"{where}: it holds no optimizer state of one optimizer; give a .ckpt written by mlp-torch fit"
        )
    try:
        optimizer.load_state_dict(copy.deepcopy(states[0]))
        dummy.grad = torch.zeros_like(dummy)
        optimizer.step()
    except Exception as err:  # a wrong shape, a missing setting, garbage: anything load or step raises
        raise CheckpointError(
            f"{where}: its optimizer state does not fit this run's {type(optimizer).__name__} over "
            f"{flat.numel()} parameters ({_first_line(err)}); give a .ckpt that mlp-torch fit wrote "
            "for this network"
        ) from None
    if scheduler_factory is not None:
        schedulers = state.get("lr_schedulers")
        try:
            scheduler_factory(optimizer).load_state_dict(copy.deepcopy(schedulers[0]))
        except Exception as err:
            raise CheckpointError(
                f"{where}: its learning-rate schedule's state does not fit the configured scheduler "
                f"({_first_line(err)}); leave --model.lr_scheduler as the run had it, or start a new run"
            ) from None
    saved_callbacks = state.get("callbacks") or {}
    if not isinstance(saved_callbacks, dict):
        raise CheckpointError(f"{where}: its callbacks' state is not a mapping")
    for callback in trainer.callbacks:
        if callback.state_key in saved_callbacks:
            try:
                copy.deepcopy(callback).load_state_dict(copy.deepcopy(saved_callbacks[callback.state_key]))
            except Exception as err:
                raise CheckpointError(
                    f"{where}: the state of its {type(callback).__name__} cannot be restored "
                    f"({_first_line(err)}); give a .ckpt written by mlp-torch fit"
                ) from None


def _first_mismatch(fresh: object, saved: object, where: str) -> str:
    """Where ``saved`` differs in shape from ``fresh`` (a missing key, a dict for a number, a
    number of another kind), as ``"key: what"``; ``""`` if it has fresh's shape."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict):
            return f"{where} is {type(saved).__name__}, not a mapping"
        for key, value in fresh.items():
            if key not in saved:
                return f"{where}.{key} is missing"
            wrong = _first_mismatch(value, saved[key], f"{where}.{key}")
            if wrong:
                return wrong
        return ""
    if isinstance(fresh, bool) != isinstance(saved, bool) or not isinstance(saved, type(fresh)):
        return f"{where} is {type(saved).__name__}, not {type(fresh).__name__}"
    if isinstance(saved, int) and not isinstance(saved, bool) and saved < 0:
        return f"{where} is negative"
    return ""


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def allowed_class_path(class_path: object) -> bool:
    """Whether ``class_path`` (``"module.Class"``) names a class of :data:`ALLOWED_CLASS_MODULES`
    that derives from that module's base class. Nothing is imported: the modules are loaded."""
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, name = class_path.rsplit(".", 1)
    if module not in ALLOWED_CLASS_MODULES or name.startswith("_"):
        return False
    if module in ("mlp_torch.optim", "mlp_torch.model.optim"):
        import mlp_torch.model.optim as where
    else:
        where = torch.optim if module == "torch.optim" else torch.optim.lr_scheduler
    cls = getattr(where, name, None)
    return isinstance(cls, type) and issubclass(cls, ALLOWED_CLASS_MODULES[module])


def check_class_paths(value: object, where: str) -> None:
    """Raise :class:`CheckpointError` if any ``class_path`` inside ``value`` (nested dicts and
    lists of a checkpoint's hyper-parameters) is not allowed."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "class_path" and not allowed_class_path(item):
                raise CheckpointError(
                    f"{where}: class_path {item!r} is not allowed in a checkpoint (only optimizers of "
                    "mlp_torch.optim or torch.optim and schedulers of torch.optim.lr_scheduler); "
                    "give the class on the command line if you trust it"
                )
            check_class_paths(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_class_paths(item, where)


def atomic_save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically: a temporary file in the same folder, flushed and
    fsynced, then ``os.replace``; the folder is fsynced too. On any error the temporary file is
    removed and ``path`` is untouched."""
    atomic_write(serialize(checkpoint), path)


def serialize(checkpoint: dict[str, Any]) -> io.BytesIO:
    """``checkpoint`` as ``torch.save`` writes it, in memory (a copy: later changes to its tensors
    do not reach it)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer


def atomic_write(buffer: io.BytesIO, path: str | Path) -> None:
    """Write ``buffer`` to ``path`` as :func:`atomic_save` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove temporary checkpoint files that a killed process left in ``folder`` (call only
    while holding the run's lock); returns them."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with :func:`atomic_save` for writes and :func:`read_checkpoint`
    for every read (``weights_only=True`` whatever the caller asks: ``--weights_only false`` has
    no effect on it, and ``mlp-torch`` refuses that option).

    A checkpoint is serialized when it is saved, so later updates cannot change it; its file is
    then written, fsynced and renamed into place by one background thread, so that training does
    not wait for the disk (two fsyncs per checkpoint, about a millisecond each here, every epoch).
    Writes and removals keep their order; a load and the end of training wait for all of them, an
    ``hpc_ckpt_*`` save (Lightning's SLURM save before a requeue) is waited for at once, and an
    error of a write is raised by the next save, load or the end of training. A kill loses at most
    the write in flight: ``last.ckpt`` is then the epoch before, whole.
    """

    def __init__(self) -> None:
        super().__init__()
        self._writer: ThreadPoolExecutor | None = None  # made on the first save
        self._pending: list[Future] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        self._submit(atomic_write, serialize(checkpoint), path)
        if Path(path).name.startswith("hpc_ckpt_"):
            self.wait()

    def remove_checkpoint(self, path) -> None:
        """Remove the file ``path`` (in order with the writes); never a folder, and a link itself,
        not what it points to."""
        self._submit(_remove_file, Path(path))

    def load_checkpoint(
        self, path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        self.wait()
        return read_checkpoint(path, what="checkpoint")

    def teardown(self) -> None:
        self.wait()

    def wait(self) -> None:
        """Until every write and removal submitted so far is done; raises the first error."""
        pending, self._pending = self._pending, []
        for job in pending:
            job.result()

    def _submit(self, fn, *args) -> None:
        done = [job for job in self._pending if job.done()]
        self._pending = [job for job in self._pending if job not in done]
        for job in done:
            job.result()  # raises a finished write's error
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending.append(self._writer.submit(fn, *args))


class EpochCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` holds the latest completed epoch (Lightning 2.6's
    own ``save_last=True`` writes ``last.ckpt`` only together with a new best), rewritten at the
    end of an epoch once ``last_every_seconds`` have passed since it was last written: every
    epoch when epochs are slower than that, so a kill loses at most the epoch in progress or that
    long of training, whichever is more. The last epoch of a run (``max_epochs``, a convergence
    stop, SIGTERM) is always written; 0 writes every epoch.

    With :meth:`for_member`, it keeps the checkpoints of one member of a sweep instead: that
    member's ``val/J`` decides its best, and what it writes is the checkpoint that member's
    ``fit`` would write (:meth:`mlp_torch.train.module.MLPModule.member_checkpoint`), nothing once
    the member has stopped.

    Args:
        last_every_seconds: the least time between two writes of ``last.ckpt`` (seconds, >= 0).
        **kwargs: those of ``ModelCheckpoint``.
    """

    member: int | None = None  # which member (None: the whole run)
    member_name = ""

    def __init__(self, *, last_every_seconds: float = 1.0, **kwargs) -> None:
        if isinstance(last_every_seconds, bool) or not (0 <= last_every_seconds < float("inf")):
            raise ValueError(f"last_every_seconds={last_every_seconds!r} must be a number of seconds >= 0")
        super().__init__(**kwargs)
        self.last_every_seconds = last_every_seconds
        self._last_written = -float("inf")

    def for_member(self, k: int, name: str) -> EpochCheckpoint:
        self.member, self.member_name = k, name
        return self

    @property
    def state_key(self) -> str:
        """``fit``'s key, with the member's name in a sweep (each member's state kept apart)."""
        key = self.fit_state_key
        return key if self.member is None else f"{key}[{self.member_name}]"

    @property
    def fit_state_key(self) -> str:
        return super().state_key

    def on_validation_end(self, trainer, pl_module) -> None:
        self._phase = "validation"
        super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._phase = "epoch end"
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer) and self._last_is_due(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _last_is_due(self, trainer) -> bool:
        """Whether this epoch's end writes ``last.ckpt``: enough time has passed, or it is the
        run's (or this member's) last epoch."""
        max_epochs = trainer.max_epochs
        last_epoch = max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs
        status = trainer.lightning_module.status[self.member] if self.member is not None else None
        member_stopped = status is not None and bool(status.stopped)
        final = trainer.should_stop or last_epoch or trainer.received_sigterm or member_stopped
        return final or time.monotonic() - self._last_written >= self.last_every_seconds

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        """``last.ckpt``, when due (Lightning also asks for it after every new best)."""
        if self._last_is_due(trainer) or not self._last_checkpoint_saved:
            self._writing_last = True
            try:
                super()._save_last_checkpoint(trainer, monitor_candidates)
            finally:
                self._writing_last = False
            self._last_written = time.monotonic()

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        if super()._should_skip_saving_checkpoint(trainer):
            return True
        if self.member is None:
            return False
        status = trainer.lightning_module.status[self.member]  # a stopped member's files are final:
        stopped_now = status.epochs == trainer.current_epoch + (status.stopped == "converged")
        return bool(status.stopped) and not stopped_now  # written last as it stopped

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """A member's checkpoint is its part of the run's (see the class); a new best of a member
        is written with its next ``last.ckpt`` (or the run's), not at once: in a sweep most
        epochs of the first ones improve some member's best, and each write costs a millisecond.
        Whatever is on disk after a kill was written together, in order."""
        if self.member is None:
            for callback in trainer.checkpoint_callbacks:  # the members' bests that it records
                if isinstance(callback, EpochCheckpoint) and callback is not self:
                    callback.flush(trainer)
            super()._save_checkpoint(trainer, filepath)
            return
        module = trainer.lightning_module
        whole = module.checkpoint_dump((trainer.global_step, getattr(self, "_phase", "")))
        checkpoint = module.member_checkpoint(self.member, whole, {self.fit_state_key: self.state_dict()})
        self._pending = {**getattr(self, "_pending", {}), filepath: checkpoint}
        if getattr(self, "_writing_last", False):
            self.flush(trainer)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def flush(self, trainer) -> None:
        """Write what waits to be written (a member's new best, then its ``last.ckpt``), in order."""
        pending, self._pending = getattr(self, "_pending", {}), {}
        for filepath, checkpoint in pending.items():
            trainer.strategy.save_checkpoint(checkpoint, filepath)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        """Remove ``filepath`` only if it lies directly in this run's checkpoint folder (and is a
        file: :meth:`AtomicCheckpointIO.remove_checkpoint` looks, in order with the writes); one
        not written yet is not written."""
        getattr(self, "_pending", {}).pop(filepath, None)
        inside = self.dirpath is not None and os.path.realpath(Path(filepath).parent) == os.path.realpath(
            self.dirpath
        )
        if inside:
            super()._remove_checkpoint(trainer, filepath)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self.flush(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self.flush(trainer)  # the bests of completed epochs

    def _monitor_candidates(self, trainer) -> dict[str, Tensor]:
        """Lightning's candidates without its ``deepcopy`` of every logged value (about a
        millisecond per call, more than an epoch of small data): each value is cloned instead. A
        member's candidates are its own figures of the epoch that the monitor and the file name
        use."""
        if self.member is None:
            metrics = trainer.callback_metrics
            candidates = {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in metrics.items()}
        else:  # (new tensors: nothing to copy)
            figures = trainer.lightning_module.epoch_log[self.member]
            named = {self.monitor, *re.findall(r"{([^}:]+)", self.filename or "")}
            candidates = {k: torch.tensor(v) for k, v in figures.items() if k in named}
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = (
            epoch.int() if isinstance(epoch, Tensor) else torch.tensor(trainer.current_epoch)
        )
        candidates["step"] = step.int() if isinstance(step, Tensor) else torch.tensor(trainer.global_step)
        return candidates

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best-checkpoint bookkeeping, trusting no path the checkpoint stores.

        Each stored path (``last_model_path``, ``best_model_path``, ``kth_best_model_path``, the keys
        of ``best_k_models``, ``dirpath``) is taken by its file name alone, inside THIS run's
        checkpoint folder, and kept only where such a checkpoint file is there. So a run that was
        moved or copied continues in the folder it is in (rewriting its own ``last.ckpt``, not a
        ``last-v1.ckpt``), and a crafted path such as ``<dirpath>/../../victim`` is dropped: it
        can never make a later save or removal touch a file outside the run."""
        best_k = {}
        for path, score in (state_dict.get("best_k_models") or {}).items():
            here = self._here(path)
            if here is not None and isinstance(score, Tensor) and score.numel() == 1:
                best_k[here] = score
        clean = {
            **state_dict,
            "dirpath": self.dirpath,
            "best_k_models": best_k,
            "last_model_path": self._here(state_dict.get("last_model_path")) or "",
        }
        if best_k:  # the best and the k-th best follow from the scores that are still there
            best, worst = (min, max) if self.mode == "min" else (max, min)
            clean["best_model_path"] = best(best_k, key=lambda p: float(best_k[p]))
            clean["best_model_score"] = best_k[clean["best_model_path"]]
            clean["kth_best_model_path"] = worst(best_k, key=lambda p: float(best_k[p]))
            clean["kth_value"] = best_k[clean["kth_best_model_path"]]
        else:
            best = self._here(state_dict.get("best_model_path"))
            clean["best_model_path"] = best or ""
            clean["best_model_score"] = state_dict.get("best_model_score") if best else None
            clean["kth_best_model_path"] = ""
            clean["kth_value"] = self.kth_value
        super().load_state_dict(clean)

    def _here(self, path: object) -> str | None:
        """``<this run's checkpoint folder>/<path's file name>`` if that is a checkpoint file
        there (a ``.ckpt``, not hidden, not a folder), else ``None``."""
        if not isinstance(path, str) or not path or self.dirpath is None:
            return None
        name = Path(path).name
        if not name.endswith(".ckpt") or name.startswith("."):
            return None
        candidate = Path(self.dirpath) / name
        return str(candidate) if candidate.is_file() else None


def _remove_file(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)


def newest_hpc_checkpoint(folder: str | Path) -> Path | None:
    """``hpc_ckpt_N.ckpt`` with the largest ``N`` in ``folder`` (where Lightning writes and looks
    for them: ``default_root_dir``), or ``None``."""
    found = []
    for p in Path(folder).glob("hpc_ckpt_*.ckpt"):
        number = p.stem.removeprefix("hpc_ckpt_")
        if number.isdigit():
            found.append((int(number), p))
    return max(found)[1] if found else None


class RunLock:
    """An exclusive ``flock`` on ``<run folder>/.lock`` held until :meth:`release` or the process
    ends (the kernel drops it even after a kill); the file names the holder (pid and host)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"run folder {self.folder} is in use by {holder}; wait for it to finish, "
                "or train in a new run (leave out --ckpt_path)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
