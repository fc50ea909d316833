"""Which matmul to run for a product: the C++ GEMM or the vendor BLAS, chosen by measurement on this machine.

Neither wins everywhere. On one CPU the C++ GEMM is faster than torch's MKL and numpy's OpenBLAS at a training
step's shapes, on another OpenBLAS beats it, and a 16-bit product may be fastest natively (bfloat16 on a CPU
with AVX512_BF16) or slowest (float16 on a CPU without float16 arithmetic). So nothing is assumed: the first
time a product of a *shape class* is asked for, both candidates are timed on its own operands.

A measurement must survive a noisy machine (the test suite, a browser, a second run on the same cores), where
a product can take 20× its time for a while. So the candidates run interleaved, own and vendor in turn,
REPEATS times each after a warm-up, and the two *agree* when each candidate's runs lie within SPREAD of each
other, either one wins every pair or their medians are within TIE (a tie: either serves), and other processes
used at most BUSY of the cores meanwhile (where that can be read and the measurement lasted long enough to
tell; a steady neighbour slows an OpenMP product in every run alike). Only a choice
whose measurement agrees is written down, with its times and spread. One that does not is provisional: the
class is measured again at its 10th, 20th, 40th, ... product until a measurement agrees and is written down.
A written-down class is timed again (one interleaved pair) every RECHECK products; a time more than
CONTRADICTS × away from its record means the record was made under noise, or the machine changed, and the
class is measured again and rewritten. A process keeps serving the choice it first made for a class (see
``choose``); what it writes down serves the processes after it.

A shape class is the backend, the dtype, the thread count, whether A and B are read by rows or transposed, and
M, N, K each rounded to the nearest power of two: a batch of 768 rows and one of 800 share a choice.

Choices are written to a JSON file beside the compiled kernels (its name has the library's key: source,
compiler, flags and CPU), so later processes reuse them; a choice made by two processes at once is measured
twice, never half-written. LLMSCRATCH_GEMM=own or =vendor forces one path (benchmarks, tests); unset or
"measure", the measured choice. ``llmscratch tune`` measures every class a config's training step uses until
each agrees (``settle``), at a moment the user knows to be quiet.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..util.atomic import atomic_write
from ..util.errors import ConfigError

CHOICES = ("own", "vendor")
REPEATS = 5  # timed runs of each candidate, interleaved
SPREAD = 1.5  # a candidate's slowest run may take at most this × its fastest for the measurement to count
TIE = 0.05  # medians this close: either candidate serves
FIRST_AGAIN = 10  # a provisional class is measured again at this product, then at twice as many each time
RECHECK = 1000  # products of a written-down class between its re-timings
CONTRADICTS = 2.0  # a re-timing this many times off its record: measure the class again
SETTLE_TRIES = 8  # measurements ``settle`` makes of a class before it gives up on agreement
BUSY = 0.25  # other processes using more than this share of the cores while a measurement ran: it does not count
BUSY_WINDOW = 0.05  # seconds: a shorter measurement is too short to see the others' share (10 ms ticks)


def others_cpu_seconds() -> float | None:
    """CPU seconds every other process on the machine has used so far (Linux's /proc/stat, less this process's
    own); None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    ours = os.times()
    return (user + nice + system + irq + softirq + steal) / ticks - (ours.user + ours.system)


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


def _timed(bk: Backend, run: Callable[[], Any], clock: Callable[[], float]) -> float:
    start = clock()
    run()
    bk.synchronize()
    return clock() - start


def measure(
    bk: Backend,
    candidates: dict[str, Callable[[], Any]],
    clock: Callable[[], float],
    others: Callable[[], float | None] = others_cpu_seconds,
) -> dict[str, Any]:
    """Each candidate warmed up, then timed REPEATS times in turn -> the record: the choice (the faster median),
    each one's median in µs, the larger spread (slowest / fastest run), the share of the cores other processes
    used meanwhile (when the measurement was long enough to tell), and whether the runs agree. A steady
    neighbour can slow one candidate in every run alike (an OpenMP team waits for its slowest thread), which
    neither the pairs nor the spread show: the neighbour's share does."""
    for run in candidates.values():
        run()
    bk.synchronize()
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    before, start = others(), clock()
    for _ in range(REPEATS):
        for name, run in candidates.items():
            runs[name].append(_timed(bk, run, clock))
    after, window = others(), clock() - start
    busy = None
    if before is not None and after is not None and window >= BUSY_WINDOW:
        busy = round((after - before) / (window * (os.cpu_count() or 1)), 2)
    medians = {name: statistics.median(t) for name, t in runs.items()}
    choice = min(medians, key=medians.__getitem__)
    other = next(name for name in candidates if name != choice)
    spread = max(max(t) / max(min(t), 1e-12) for t in runs.values())
    wins_every_pair = all(a <= b for a, b in zip(runs[choice], runs[other], strict=True))
    tie = medians[other] <= medians[choice] * (1 + TIE)
    return {
        "choice": choice,
        **{f"{name}_us": round(m * 1e6, 1) for name, m in medians.items()},
        "spread": round(spread, 2),
        "others": busy,
        "agree": spread <= SPREAD and (wins_every_pair or tie) and (busy is None or busy <= BUSY),
    }


def contradicts(
    record: dict[str, Any], bk: Backend, candidates: dict[str, Callable[[], Any]], clock: Callable[[], float]
) -> bool:
    """One interleaved pair timed against a written-down record: is either more than CONTRADICTS × off it?"""
    for name, run in candidates.items():
        now, then = _timed(bk, run, clock) * 1e6, record.get(f"{name}_us", 0.0)
        if not then or not 1 / CONTRADICTS <= now / then <= CONTRADICTS:
            return True
    return False


class GemmChoices:
    """The measured choices of one compiled library, in memory and in ``path``; ``clock`` times them, ``others``
    tells the CPU seconds other processes have used (both replaced in the tests)."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.perf_counter,
        others: Callable[[], float | None] = others_cpu_seconds,
    ) -> None:
        self.path, self.clock, self.others = path, clock, others
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: measure again
            found = {}
        # only records whose measurement agreed are kept; any other entry is measured again
        self.measured: dict[str, dict[str, Any]] = {
            k: v for k, v in found.items() if isinstance(v, dict) and v.get("agree") is True
        }
        self.products: dict[str, int] = {}  # key -> products of the class asked for in this process
        self.serving: dict[str, str] = {}  # key -> the choice this process serves the class, for its whole life
        self.settling = False  # True (llmscratch tune): each class met is measured anew until it agrees
        self.settled: dict[str, dict[str, Any]] = {}  # key -> what settling it gave

    def choose(self, bk: Backend, a: Any, b: Any, candidates: dict[str, Callable[[], Any]]) -> str:
        """The faster of ``candidates`` (own, vendor: each computes this product) for a's and b's class.

        A process serves one choice per class for its whole life (own and vendor round differently, so a
        choice that changed mid-run would make the run's numbers depend on when it changed, and a resumed
        run could not repeat them); the later measurements below only decide what is written down for the
        processes after it."""
        if (force := forced()) is not None:
            return force
        key = shape_class(bk, a, b)
        n = self.products[key] = self.products.get(key, 0) + 1
        if self.settling:
            if key not in self.settled:
                self.settled[key] = self.settle(bk, a, b, candidates)
            return self.settled[key]["choice"]
        if key not in self.serving:
            record = self.measured.get(key)
            self.serving[key] = record["choice"] if record else self._measure(key, bk, candidates)
        elif key in self.measured:
            if n % RECHECK == 0 and contradicts(self.measured[key], bk, candidates, self.clock):
                del self.measured[key]
                self._measure(key, bk, candidates)
        elif _again(n):
            self._measure(key, bk, candidates)
        return self.serving[key]

    def taken(self) -> dict[str, dict[str, Any]]:
        """What each class met in this process took, with its written-down record if it has one."""
        return {
            key: self.measured.get(key, {"agree": False}) | {"choice": choice} for key, choice in self.serving.items()
        }

    def settle(self, bk: Backend, a: Any, b: Any, candidates: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        """Measure a's and b's class until a measurement agrees (at most SETTLE_TRIES) -> the last record."""
        key = shape_class(bk, a, b)
        for _ in range(SETTLE_TRIES):
            record = measure(bk, candidates, self.clock, self.others)
            if record["agree"]:
                self._keep(key, record)
                break
        return record

    def _measure(self, key: str, bk: Backend, candidates: dict[str, Callable[[], Any]]) -> str:
        record = measure(bk, candidates, self.clock, self.others)
        if record["agree"]:
            self._keep(key, record)
        return record["choice"]

    def _keep(self, key: str, record: dict[str, Any]) -> None:
        """A measurement that agrees: written down (the file rewritten whole)."""
        self.measured[key] = record
        with contextlib.suppress(OSError):  # a read-only cache: the choice still holds for this process
            atomic_write(self.path, json.dumps(self.measured, indent=1, sort_keys=True) + "\n")


def _again(n: int) -> bool:
    """Whether a provisional class's n-th product is measured again: FIRST_AGAIN, twice that, 4×, ... (a
    machine that has become quiet is soon seen; the measurements' cost falls off as 1/n)."""
    ratio, rest = divmod(n, FIRST_AGAIN)
    return rest == 0 and ratio & (ratio - 1) == 0
