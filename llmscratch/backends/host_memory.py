"""Keep freed host memory for reuse: glibc malloc tuning for the CPU backends.

Every op returns a new array, so a training step frees and reallocates the same few-MB buffers hundreds of
times. By default glibc serves such blocks with fresh mmap() calls and hands freed ones back to the kernel,
so each new array pays a page fault per 4 KiB page on first touch. Measured on a 2-core x86 machine with a
(12,64,512) float32 array: our GELU backward took 3.5 ms in NumPy and 2.2 ms in torch this way, 0.5 and
0.4 ms once malloc keeps its memory (torch's fused aten.gelu_backward: 0.37 ms). Whole training steps got
1.7x faster on NumPy.

The fix raises three malloc thresholds once per process (Linux with glibc only; a no-op elsewhere). The
cost: the process keeps up to M_TRIM_THRESHOLD of freed memory instead of returning it at once.
Set LLMSCRATCH_MALLOC_TUNING=0 to leave malloc alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .base import PeakMemory

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems: blocks above this still get mmap()
_TRIM_THRESHOLD = 512 << 20
_TOP_PAD = 64 << 20

_tuned: bool | None = None


def tune_host_allocator() -> bool:
    """Apply the malloc settings once; returns whether they are in effect."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if os.environ.get("LLMSCRATCH_MALLOC_TUNING", "1") != "0" and sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):  # not glibc (e.g. musl)
                return False
            _tuned = all(
                mallopt(option, value) == 1
                for option, value in (
                    (M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                    (M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                    (M_TOP_PAD, _TOP_PAD),
                )
            )
    return _tuned


def release_free_memory() -> None:
    """Hand malloc's free pages back to the kernel now (glibc malloc_trim); a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def peak_rss_delta() -> Iterator[PeakMemory]:
    """The process's peak resident memory inside the block minus its resident memory at the start.

    Linux only (None elsewhere): writing 5 to /proc/self/clear_refs resets the VmHWM high-water mark.
    """
    result = PeakMemory()
    release_free_memory()  # else memory freed earlier (kept by the tuning above) is reused unseen
    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = _status_kib("VmRSS")
    except OSError:
        yield result
        return
    try:
        yield result
    finally:
        result.bytes = max(0, _status_kib("VmHWM") - start) * 1024
