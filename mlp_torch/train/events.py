"""TensorBoard events written by the calling thread: one run's scalars, histograms and text.

A ``SummaryWriter`` (what Lightning's ``TensorBoardLogger`` holds) hands each event to a thread of
its own, which checksums it (in pure Python: ``tensorboard``'s CRC32C) and writes it, holding the
GIL all the while. A sweep logging each of its K members every epoch so kept K such threads
taking the GIL from the training loop between its tensor operations: in a 32-member sweep half
of the wall time went there. :class:`RunEvents` writes one run's events itself, one event per
epoch holding all of that epoch's scalars, in the thread that calls it; ``fit`` (one member) and
``sweep`` (one per member) both log through it.

The file is a standard event file (``events.out.tfevents.*``) in the run's folder; TensorBoard
reads it beside any other event file there.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import CRC_TABLE, masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter
from torch import Tensor

__all__ = ["HISTOGRAM_BINS", "RunEvents", "checksum"]

HISTOGRAM_BINS = 30  # bins of the weight and gradient histograms


class RunEvents:
    """The events of one TensorBoard run, written in the caller's thread; the file is created on
    the first event (in ``log_dir``, made if missing).

    Args:
        log_dir: the run's folder.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._records: RecordWriter | None = None

    def add(self, scalars: dict[str, float], step: int) -> None:
        """One event at ``step`` with every ``tag: value`` of ``scalars``."""
        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        self.summary(Summary(value=values), step)

    def histogram(self, tag: str, t: Tensor, step: int, bins: int = HISTOGRAM_BINS) -> None:
        """``t``'s histogram in ``bins`` equal bins from its min to its max, counted by torch
        (``SummaryWriter.add_histogram`` takes milliseconds per tensor: numpy, and a thousand
        exponential bins); nothing for a tensor with inf or NaN, which TensorBoard rejects."""
        t = t.detach().flatten().double()  # (n,)
        stats = torch.stack([t.min(), t.max(), t.sum(), t.dot(t)]).tolist() if t.numel() else []
        if not stats or not all(map(math.isfinite, stats)):
            return
        low, high, total, squares = stats
        if high == low:  # one value: one bin around it
            low, high, bins = low - 0.5, high + 0.5, 1
        counts = torch.histc(t, bins, min=low, max=high)  # (bins,)
        limits = torch.linspace(low, high, bins + 1, dtype=torch.float64)[
            1:
        ]  # (bins,): each bin's right edge
        histogram = HistogramProto(
            min=low, max=high, num=t.numel(), sum=total, sum_squares=squares,
            bucket_limit=limits.tolist(), bucket=counts.tolist(),
        )  # fmt: skip
        self.summary(Summary(value=[Summary.Value(tag=tag, histo=histogram)]), step)

    def text(self, tag: str, text: str, step: int) -> None:
        """A text entry (TensorBoard's Text tab)."""
        from torch.utils.tensorboard.summary import text as text_summary

        self.summary(text_summary(tag, text), step)

    def summary(self, summary: Summary, step: int) -> None:
        """One event at ``step`` holding ``summary`` (e.g. the HParams tab's entries)."""
        if self._records is None:
            self._open()
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

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
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.mlp_torch"
        self._records = _Records(open(self.log_dir / name, "ab"))  # noqa: SIM115 (closed by close())
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Event) -> None:
        self._records.write(event.SerializeToString())


class _Records(RecordWriter):
    """TensorBoard's record writer with :func:`checksum` for its CRCs."""

    def write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        crc = checksum()
        self._writer.write(header + struct.pack("<I", crc(header)) + data + struct.pack("<I", crc(data)))


_TABLE = np.array(CRC_TABLE, dtype=np.int64)
_compiled_crc = None


def _crc32c(data: np.ndarray, table: np.ndarray) -> int:
    """The masked CRC-32C of the bytes ``data`` (uint8), TensorBoard's record checksum."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def checksum():
    """The function that checksums records: :func:`_crc32c` compiled where numba is imported
    already (the native loop's runs; TensorBoard's own CRC, in Python, took about 50 µs for a
    histogram's 600 bytes, half of its cost), else TensorBoard's ``masked_crc32c``."""
    global _compiled_crc
    if _compiled_crc is None:
        if "numba" not in sys.modules:
            return masked_crc32c
        import numba

        compiled = numba.njit(cache=True, nogil=True)(_crc32c)
        _compiled_crc = lambda data: int(compiled(np.frombuffer(data, np.uint8), _TABLE))  # noqa: E731
    return _compiled_crc


def warm() -> None:
    """Compile :func:`checksum`'s CRC now, where numba is installed (``scripts/setup`` calls this
    once, so that no run compiles it)."""
    try:
        import numba  # noqa: F401 (checksum compiles where numba is imported)
    except ImportError:
        return
    checksum()(b"mlp_torch")
