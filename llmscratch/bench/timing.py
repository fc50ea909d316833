"""Timing that tells the truth on noisy machines and on GPUs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from ..backends import Backend


def median_time(
    bk: Backend, fn: Callable[[], object], warmup: int = 1, min_runs: int = 3, budget_s: float = 2.0
) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls; runs at least min_runs times, more while the time
    budget lasts. The device is synchronised around every call, so a GPU's queued work is counted."""
    for _ in range(warmup):
        fn()
    bk.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 100):
        t0 = time.perf_counter()
        fn()
        bk.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_flops(bk: Backend, n: int = 2048) -> float:
    """float32 FLOP/s of an n×n matmul on this backend: the peak MFU is measured against."""
    a = bk.from_numpy(np.random.default_rng(0).standard_normal((n, n)), bk.xp.float32)
    seconds = median_time(bk, lambda: a @ a, warmup=2, min_runs=5, budget_s=1.0)
    return 2 * n**3 / seconds
