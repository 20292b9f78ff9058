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

__all__ = ["HISTOGRAM_BINS", "RunEvents", "checksum", "histogram_figures"]

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
        """``t``'s histogram in ``bins`` equal bins from its min to its max, as ``torch.histc``
        counts them (``SummaryWriter.add_histogram`` takes milliseconds per tensor: numpy, and a
        thousand exponential bins); nothing for a tensor with inf or NaN, which TensorBoard
        rejects. Counted by :func:`histogram_figures`."""
        self.histograms({tag: t}, step, bins)

    def histograms(self, tensors: dict[str, Tensor], step: int, bins: int = HISTOGRAM_BINS) -> None:
        """:meth:`histogram` of each ``tag: tensor`` of ``tensors``, in one event."""
        values = []
        for tag, t in tensors.items():
            figures = histogram_figures(t, bins)
            if figures is None:
                continue
            low, high, total, squares, counts = figures
            width, n = high - low, len(counts)
            limits = [low + width * (i + 1) / n for i in range(n - 1)] + [high]  # each bin's right edge
            histogram = HistogramProto(
                min=low, max=high, num=t.numel(), sum=total, sum_squares=squares, bucket_limit=limits,
                bucket=counts,
            )  # fmt: skip
            values.append(Summary.Value(tag=tag, histo=histogram))
        if values:
            self.summary(Summary(value=values), step)

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


def histogram_figures(t: Tensor, bins: int = HISTOGRAM_BINS):
    """``(min, max, sum, sum of squares, counts)`` of ``t``'s values in float64, ``counts`` (a list)
    of ``bins`` equal bins from the min to the max as ``torch.histc`` counts them (a value's bin
    ``int((v - min) * bins / (max - min))``, the max in the last); when all values are equal, one
    bin from ``v - 0.5`` to ``v + 0.5``, which are then the min and max; ``None`` for an empty
    tensor or one with inf or NaN. One compiled pass (:func:`_histogram`) for a CPU tensor where
    numba is imported already (the native loop's runs), else six torch operations."""
    if t.numel() == 0:
        return None
    t = t.detach()
    compiled = _compiled(_histogram) if t.device.type == "cpu" and t.dtype in _NUMPY else None
    if compiled is not None:
        counts, out = np.zeros(bins, np.int64), np.empty(4)
        used = compiled(t.contiguous().view(-1).numpy(), counts, out)
        return None if used == 0 else (*out.tolist(), counts[:used].tolist())
    t = t.flatten().double()  # (n,)
    stats = torch.stack([t.min(), t.max(), t.sum(), t.dot(t)]).tolist()
    if not all(map(math.isfinite, stats)):
        return None
    low, high, total, squares = stats
    if high == low:  # one value: one bin around it
        low, high, bins = low - 0.5, high + 0.5, 1
    return low, high, total, squares, torch.histc(t, bins, min=low, max=high).tolist()


_NUMPY = (torch.float32, torch.float64)  # the dtypes _histogram takes


def _histogram(values: np.ndarray, counts: np.ndarray, out: np.ndarray) -> int:
    """:func:`histogram_figures` of ``values`` (1-D, float32 or float64): the min, max, sum and sum
    of squares into ``out`` (float64), the counts of ``len(counts)`` bins (or of one, when all
    values are equal) into ``counts`` (zeros); returns the bins used, 0 (nothing counted) where a
    figure is not finite."""
    low = high = np.float64(values[0])
    total = squares = 0.0
    for v in values:
        x = np.float64(v)
        low = min(low, x)
        high = max(high, x)
        total += x
        squares += x * x
    if not (np.isfinite(total) and np.isfinite(squares) and np.isfinite(low) and np.isfinite(high)):
        return 0  # (a NaN makes the sum one: min and max may skip it)
    bins = len(counts)
    if high == low:
        low, high, bins = low - 0.5, high + 0.5, 1
    for v in values:
        counts[min(int((np.float64(v) - low) * bins / (high - low)), bins - 1)] += 1
    out[0], out[1], out[2], out[3] = low, high, total, squares
    return bins


_TABLE = np.array(CRC_TABLE, dtype=np.int64)


def _crc32c(data: np.ndarray, table: np.ndarray) -> int:
    """The masked CRC-32C of the bytes ``data`` (uint8), TensorBoard's record checksum."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_compiled_functions: dict = {}


def _compiled(fn):
    """``fn`` compiled by numba (``cache=True``) where numba is imported already, else ``None``:
    this module never imports numba itself (a run of the torch loop does not pay its import)."""
    if fn not in _compiled_functions:
        if "numba" not in sys.modules:
            return None
        import numba

        _compiled_functions[fn] = numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    return _compiled_functions[fn]


def checksum():
    """The function that checksums records: :func:`_crc32c` compiled where numba is imported
    already (the native loop's runs; TensorBoard's own CRC, in Python, took about 50 µs for a
    histogram's 600 bytes, half of its cost), else TensorBoard's ``masked_crc32c``."""
    global _checksum
    if _checksum is None:
        compiled = _compiled(_crc32c)
        if compiled is None:
            return masked_crc32c
        _checksum = lambda data: int(compiled(np.frombuffer(data, np.uint8), _TABLE))  # noqa: E731
    return _checksum


_checksum = None  # checksum()'s compiled one, made once


def warm() -> None:
    """Compile :func:`checksum`'s CRC and :func:`histogram_figures`' pass (float32 and float64) now,
    where numba is installed (``scripts/setup`` calls this once, so that no run compiles them)."""
    try:
        import numba  # noqa: F401 (they compile where numba is imported)
    except ImportError:
        return
    checksum()(b"mlp_torch")
    for dtype in _NUMPY:
        histogram_figures(torch.arange(3, dtype=dtype))
