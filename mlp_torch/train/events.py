"""TensorBoard scalars written by the calling thread, for a loop that logs many runs every epoch.

A ``SummaryWriter`` (what Lightning's ``TensorBoardLogger`` holds) hands each event to a thread of
its own, which checksums it (in pure Python: ``tensorboard``'s CRC32C) and writes it, holding the
GIL all the while. A sweep logging each of its K members every epoch so kept K such threads
taking the GIL from the training loop between its tensor operations: in a 32-member sweep half
of the wall time went there. :class:`ScalarEvents` writes one run's scalars itself, one event per
step holding all of that step's values, in the thread that calls it.

The file is a standard event file (``events.out.tfevents.*``) in the run's folder; TensorBoard
reads it beside the files a ``SummaryWriter`` writes there (hyper-parameters, text).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

__all__ = ["ScalarEvents"]


class ScalarEvents:
    """Scalars of one TensorBoard run, written in the caller's thread; the file is created on the
    first :meth:`add` (in ``log_dir``, made if missing).

    Args:
        log_dir: the run's folder.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._records: RecordWriter | None = None

    def add(self, scalars: dict[str, float], step: int) -> None:
        """One event at ``step`` with every ``tag: value`` of ``scalars``."""
        if self._records is None:
            self._open()
        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        self._write(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))

    def flush(self) -> None:
        """Hand what was added to the operating system (TensorBoard sees it from then on)."""
        if self._records is not None:
            self._records.flush()

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None

    def _open(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.scalars"
        self._records = RecordWriter(open(self.log_dir / name, "ab"))  # noqa: SIM115 (closed by close())
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Event) -> None:
        self._records.write(event.SerializeToString())
