"""Which matmul to run for a product: the C++ GEMM or the vendor BLAS, chosen by measurement on this machine.

Neither wins everywhere. On one CPU the C++ GEMM is faster than torch's MKL and numpy's OpenBLAS at a training
step's shapes, on another OpenBLAS beats it, and a 16-bit product may be fastest natively (bfloat16 on a CPU
with AVX512_BF16) or slowest (float16 on a CPU without float16 arithmetic). So nothing is assumed: the first
time a product of a *shape class* is asked for, both candidates are timed on its own operands (the best of
REPEATS runs after one warm-up each), and the faster one serves that class from then on (confirmed by a
second measurement at its CONFIRM_AT-th product, which is the one kept).

A shape class is the backend, the dtype, the thread count, whether A and B are read by rows or transposed, and
M, N, K each rounded to the nearest power of two: a batch of 768 rows and one of 800 share a choice.

Choices are written to a JSON file beside the compiled kernels (its name has the library's key: source,
compiler, flags and CPU), so later processes reuse them; a choice made by two processes at once is measured
twice, never half-written. LLMSCRATCH_GEMM=own or =vendor forces one path (benchmarks, tests); unset or
"measure", the measured choice.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..util.atomic import atomic_write
from ..util.errors import ConfigError

CHOICES = ("own", "vendor")
REPEATS = 3
# A class is measured when first seen, and that choice serves the process; at its CONFIRM_AT-th product it is
# measured again and only that second choice is written down: the first can fall in a transient (another
# library's threads still spinning after its last call took a 0.3 ms product to 16 ms, measured).
CONFIRM_AT = 10
FORCE_VARIABLE = "LLMSCRATCH_GEMM"


def forced() -> str | None:
    """The path LLMSCRATCH_GEMM forces ("own" | "vendor"), or None to measure."""
    value = os.environ.get(FORCE_VARIABLE, "measure")
    if value not in (*CHOICES, "measure"):
        raise ConfigError(f"{FORCE_VARIABLE}={value!r}: use own, vendor or measure")
    return None if value == "measure" else value


def shape_class(bk: Backend, a: Any, b: Any) -> str:
    """The key a product a (M,K) @ b (K,N) shares its choice under."""
    (M, K), N = a.shape, b.shape[1]
    layout = "".join("n" if bk.strides(x)[-1] == 1 else "t" for x in (a, b))  # rows contiguous, or transposed

    def rounded(n: int) -> int:
        return 2 ** round(math.log2(max(n, 1)))

    return f"{bk.name}/{bk.dtype_name}/{bk.threads()}t/{layout}/{rounded(M)}x{rounded(N)}x{rounded(K)}"


def _best_time(bk: Backend, run: Callable[[], Any]) -> float:
    run()
    bk.synchronize()
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        bk.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


class GemmChoices:
    """The measured choices of one compiled library, in memory and in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.measured: dict[str, dict[str, Any]] = json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: measure again
            self.measured = {}
        self.provisional: dict[str, tuple[str, int]] = {}  # key -> (first choice, products since)

    def choose(self, bk: Backend, a: Any, b: Any, candidates: dict[str, Callable[[], Any]]) -> str:
        """The faster of ``candidates`` (own, vendor: each computes this product) for a's and b's class."""
        if (force := forced()) is not None:
            return force
        key = shape_class(bk, a, b)
        if key in self.measured:
            return self.measured[key]["choice"]
        choice, seen = self.provisional.get(key) or (self._measure(bk, candidates)["choice"], 0)
        if seen + 1 < CONFIRM_AT:
            self.provisional[key] = (choice, seen + 1)
            return choice
        self.measured[key] = self._measure(bk, candidates)
        with contextlib.suppress(OSError):  # a read-only cache: the choice still holds for this process
            atomic_write(self.path, json.dumps(self.measured, indent=1, sort_keys=True) + "\n")
        return self.measured[key]["choice"]

    @staticmethod
    def _measure(bk: Backend, candidates: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        seconds = {name: _best_time(bk, run) for name, run in candidates.items()}
        timings = {f"{name}_us": round(s * 1e6, 1) for name, s in seconds.items()}
        return {"choice": min(seconds, key=seconds.__getitem__)} | timings
