"""How much memory this machine has free, and a guard that refuses arrays that cannot fit.

Used before anything large is allocated (a network's weights, a data file's arrays), so that a
size typed by mistake ends with one line naming the size instead of an out-of-memory kill.
"""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "check_fits_in_memory", "format_bytes"]


def available_memory_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else the physical memory size."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def format_bytes(n: float) -> str:
    """``n`` bytes as e.g. ``"256 GiB"`` or ``"3.5 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_fits_in_memory(nbytes: int, what: str, hint: str) -> None:
    """Raise ``ValueError`` if ``nbytes`` exceeds the memory available now; the message says
    ``what`` needs how much, how much there is, and ``hint`` (what to do)."""
    available = available_memory_bytes()
    if nbytes > available:
        raise ValueError(
            f"{what} needs about {format_bytes(nbytes)}, more than the {format_bytes(available)} of "
            f"memory available on this machine; {hint}"
        )
