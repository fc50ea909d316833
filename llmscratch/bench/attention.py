"""Attention kernels × backends × sequence lengths, forward and forward+backward.

FLOPs follow the Triton tutorial's convention: 4·B·H·T²·D for the forward (two matmuls), halved when
causal, and 2.5× the forward for the backward, so forward+backward counts 3.5× the forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import Backend
from ..kernels import KERNELS
from .timing import median_time

CPU_T = (256, 512, 1024, 2048, 4096)
GPU_T = (256, 512, 1024, 2048, 4096, 8192, 16384)


def attention_flops(B: int, H: int, T: int, D: int, causal: bool, backward: bool) -> float:
    fwd = 4 * B * H * T * T * D * (0.5 if causal else 1.0)
    return fwd * 3.5 if backward else fwd


def _runners(bk: Backend, kernel: str, T: int, B: int, H: int, D: int, causal: bool) -> list[tuple[dict, Callable]]:
    """(record, run) for the forward and the forward+backward of one kernel at one T."""
    base = {
        "backend": bk.name,
        "device": str(bk.device),
        "kernel": kernel,
        "B": B,
        "H": H,
        "T": T,
        "D": D,
        "dtype": bk.dtype_name,
        "causal": causal,
    }
    k = KERNELS[kernel]
    rng = np.random.default_rng(0)
    q, kk, v, dout = (bk.from_numpy(rng.standard_normal((B, H, T, D))) for _ in range(4))

    def run(backward: bool) -> None:
        _, cache = k.forward(bk, q, kk, v, causal=causal)
        if backward:
            k.backward(bk, dout, cache)

    return [(dict(base, **{"pass": "fwd"}), lambda: run(False)), (dict(base, **{"pass": "fwd+bwd"}), lambda: run(True))]


def _failure(e: BaseException) -> str:
    first = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]
    status = "N/A" if "No viable backend" in first or "No available kernel" in first else "failed"
    return f"{status}: {first[:120]}"


def bench_attention(
    backends: list[Backend],
    kernels: list[str] | None = None,
    Ts: list[int] | None = None,
    B: int = 1,
    H: int = 4,
    D: int = 64,
    causal: bool = True,
    budget_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Every kernel that runs on each backend, at each T: one record per pass.

    All cases are timed first and their peak memory is measured afterwards, in a second pass: right after a
    traced, memory-hungry case (naive at T=4096 frees ~1 GB) the next case ran up to 1.7x slower here.
    """
    cases = []
    for bk in backends:
        for T in Ts or (GPU_T if bk.is_gpu else CPU_T):
            for kernel in kernels or list(KERNELS):
                if bk.name in KERNELS[kernel].backends:
                    cases += [(bk, record, run) for record, run in _runners(bk, kernel, T, B, H, D, causal)]
    records = []
    for bk, record, run in cases:
        try:
            seconds = median_time(bk, run, budget_s=budget_s)
        except (RuntimeError, MemoryError) as e:  # an SDPA choice the device lacks; out of memory
            records.append(dict(record, time_ms=None, tflops=None, peak_mem_bytes=None, status=_failure(e)))
            continue
        flops = attention_flops(B, H, record["T"], D, causal, record["pass"] == "fwd+bwd")
        records.append(dict(record, time_ms=seconds * 1e3, tflops=flops / seconds / 1e12, status="ok"))
    for (bk, _, run), record in zip(cases, records, strict=True):
        if record["status"] == "ok":
            with bk.peak_memory() as mem:
                run()
            record["peak_mem_bytes"] = mem.bytes
    return records
