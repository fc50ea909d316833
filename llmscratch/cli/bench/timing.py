"""Timing that tells the truth on noisy machines and on GPUs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ...backends import Backend
from ...kernels import get_ops
from ...models import GPTConfig, parameter_specs


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


def linear_layer_matmuls(bk: Backend, cfg: GPTConfig, op_set: str, rows: int) -> Callable[[], None]:
    """The matmuls of one training step's linear layers, in the order a step runs them, as one call.

    Each layer (c_attn, c_proj, c_fc, mlp c_proj of every block, then the output head) gets its own input x
    (rows, n_in), weight w (n_in, n_out) and output gradient d (rows, n_out), so that, as in a real step, each
    matmul reads operands the previous ones pushed out of the caches: the forward x @ w of every layer, then
    the backward d @ wᵀ and xᵀ @ d from the last layer back to the first. They run on the matmul of the
    op set ``op_set``, the one the model's step uses: the library's BLAS, or the cpu-fused GEMM.
    What a step takes beyond them is everything else.
    """
    xp = bk.xp
    matmul = partial(get_ops(op_set, bk).matmul, bk)
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> Any:
        return bk.from_numpy(rng.standard_normal(shape))

    weights = [normal(*shape) for name, (shape, _) in parameter_specs(cfg).items() if ".h." in name and len(shape) == 2]
    weights.append(xp.matrix_transpose(normal(cfg.vocab_size, cfg.n_embd)))  # the head: logits = x @ wteᵀ
    layers = [(normal(rows, w.shape[0]), w, normal(rows, w.shape[1])) for w in weights]

    def step() -> None:
        for x, w, _ in layers:
            matmul(x, w)
        for x, w, d in reversed(layers):
            matmul(d, xp.matrix_transpose(w))
            matmul(xp.matrix_transpose(x), d)

    return step
