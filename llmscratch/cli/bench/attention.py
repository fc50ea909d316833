"""Attention kernels × backends × sequence lengths, forward and forward+backward.

FLOPs follow the Triton tutorial's convention: 4·B·H·T²·D for the forward (two matmuls), halved when
causal, and 2.5× the forward for the backward, so forward+backward counts 3.5× the forward.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...backends import FLOAT_DTYPES, Backend, get_backend
from ...kernels import KERNELS
from ...util.errors import ConfigError
from ..args import POSITIVE, number_list
from .common import COMPILED, add_output_args, backend_list, out_dir, parse_spec, publish
from .report import markdown_table, pyplot

CPU_T = (256, 512, 1024, 2048, 4096)
GPU_T = (256, 512, 1024, 2048, 4096, 8192, 16384)


def attention_flops(B: int, H: int, T: int, D: int, causal: bool, backward: bool) -> float:
    fwd = 4 * B * H * T * T * D * (0.5 if causal else 1.0)
    return fwd * 3.5 if backward else fwd


def _runners(
    bk: Backend, kernel: str, T: int, B: int, H: int, D: int, causal: bool, compiled: bool = False
) -> list[tuple[dict, Callable]]:
    """(record, run) for the forward and the forward+backward of one kernel at one T; ``compiled``: each
    pass compiled into one program (Backend.compile), traced at its warm-up run."""
    base = {
        "backend": f"{bk.name}@{COMPILED}" if compiled else bk.name,
        "device": bk.device_label,
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

    def passes(backward: bool) -> Callable[..., Any]:
        def run(q: Any, kk: Any, v: Any, dout: Any) -> Any:
            out, cache = k.forward(bk, q, kk, v, causal=causal)
            return k.backward(bk, dout, cache) if backward else out

        run = bk.compile(run) if compiled else run
        return lambda: run(q, kk, v, dout)

    return [(dict(base, **{"pass": "fwd"}), passes(False)), (dict(base, **{"pass": "fwd+bwd"}), passes(True))]


def _failure(e: BaseException) -> str:
    first = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]
    status = "N/A" if "No viable backend" in first or "No available kernel" in first else "failed"
    return f"{status}: {first[:120]}"


def bench_attention(
    backends: list[Backend | tuple[Backend, bool]],
    kernels: list[str] | None = None,
    Ts: list[int] | None = None,
    B: int = 1,
    H: int = 4,
    D: int = 64,
    causal: bool = True,
    budget_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Every kernel that runs on each backend, at each T: one record per pass.

    The kernels compared with each other (same backend, T and pass) take turns, one run each per round, for
    at least 5 rounds and as many as ``budget_s`` per kernel allows; each time is the median. So a slow phase
    of the machine hits all of them, not one. Peak memory is measured afterwards, in a second pass: right
    after a traced, memory-hungry case the next one ran up to 1.7x slower here.
    """
    groups: dict[tuple, list] = {}
    for entry in backends:
        bk, compiled = entry if isinstance(entry, tuple) else (entry, False)
        for T in Ts or (GPU_T if bk.is_gpu else CPU_T):
            for kernel in kernels or list(KERNELS):
                if KERNELS[kernel].runs_on(bk.name):
                    for record, run in _runners(bk, kernel, T, B, H, D, causal, compiled):
                        groups.setdefault((id(bk), T, record["pass"]), []).append((bk, record, run))
    results: list[tuple[Backend, dict, Callable]] = []
    for cases in groups.values():
        live, times = [], {}
        for bk, record, run in cases:  # one warm-up run each; a kernel the device lacks drops out here
            try:
                run()
                bk.synchronize()
            except (RuntimeError, MemoryError) as e:  # an SDPA choice the device lacks; out of memory
                results.append(
                    (bk, dict(record, time_ms=None, tflops=None, peak_mem_bytes=None, status=_failure(e)), run)
                )
                continue
            live.append((bk, record, run))
            times[id(record)] = []
        start = time.perf_counter()
        rounds = 0
        while live and (rounds < 5 or time.perf_counter() - start < budget_s * len(live)) and rounds < 100:
            for bk, record, run in live:
                t0 = time.perf_counter()
                run()
                bk.synchronize()
                times[id(record)].append(time.perf_counter() - t0)
            rounds += 1
        for bk, record, run in live:
            seconds = statistics.median(times[id(record)])
            flops = attention_flops(B, H, record["T"], D, causal, record["pass"] == "fwd+bwd")
            results.append((bk, dict(record, time_ms=seconds * 1e3, tflops=flops / seconds / 1e12, status="ok"), run))
    for bk, record, run in results:
        if record["status"] == "ok":
            with bk.peak_memory() as mem:
                run()
            record["peak_mem_bytes"] = mem.bytes
    order = {k: i for i, k in enumerate(KERNELS)}
    return sorted(
        (r for _, r, _ in results), key=lambda r: (r["backend"], r["device"], r["T"], order[r["kernel"]], r["pass"])
    )


def attention_markdown(records: list[dict[str, Any]]) -> str:
    """One table; each kernel's time and memory also as a ratio to naive on the same backend, T and pass."""
    naive = {(r["backend"], r["device"], r["T"], r["pass"]): r for r in records if r["kernel"] == "naive"}
    rows = []
    for r in records:
        ref = naive.get((r["backend"], r["device"], r["T"], r["pass"]))
        ok = r["status"] == "ok" and ref is not None and ref["status"] == "ok"
        rows.append(
            dict(
                r,
                peak_mib=None if r.get("peak_mem_bytes") is None else r["peak_mem_bytes"] / 2**20,
                speedup=ref["time_ms"] / r["time_ms"] if ok else None,
                mem_ratio=(ref["peak_mem_bytes"] / r["peak_mem_bytes"]) if ok and r["peak_mem_bytes"] else None,
                note="" if r["status"] == "ok" else r["status"],
            )
        )
    return markdown_table(
        rows,
        [
            ("backend", "backend", ""),
            ("device", "device", ""),
            ("kernel", "kernel", ""),
            ("T", "T", ""),
            ("pass", "pass", ""),
            ("time ms", "time_ms", ".2f"),
            ("TFLOP/s", "tflops", ".3f"),
            ("peak MiB", "peak_mib", ".1f"),
            ("× faster than naive", "speedup", ".2f"),
            ("× less memory than naive", "mem_ratio", ".1f"),
            ("note", "note", ""),
        ],
    )


def plot_attention(records: list[dict[str, Any]], out: Path, name: str) -> list[Path]:
    """time vs T and memory vs T (log-log), one line per backend/kernel, forward+backward."""
    plt = pyplot()
    if plt is None:
        return []
    paths = []
    rows = [r for r in records if r["pass"] == "fwd+bwd" and r["status"] == "ok"]
    for key, label, scale in (
        ("time_ms", "time (ms), forward+backward", 1.0),
        ("peak_mem_bytes", "extra memory (MiB)", 2**-20),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for series in sorted({(r["backend"], r["device"], r["kernel"]) for r in rows}):
            pts = sorted(
                (r["T"], r[key] * scale) for r in rows if (r["backend"], r["device"], r["kernel"]) == series and r[key]
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{series[0]} ({series[1]}) {series[2]}")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="T (sequence length)",
            ylabel=label,
            title=f"attention, B=1 H=4 D=64, {rows[0]['dtype'] if rows else ''}",
        )
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        path = out / f"{name}_{'time' if key == 'time_ms' else 'memory'}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def cmd(args: argparse.Namespace) -> int:
    specs = [parse_spec(text) for text in backend_list(args.backend, compiled=True)]
    backends = [(get_backend(s.name, s.device, dtype=args.dtype), s.compiled) for s in specs]
    kernels = args.kernels.split(",") if args.kernels else None
    unknown = [k for k in kernels or () if k not in KERNELS]
    if unknown:
        raise ConfigError(f"--kernels: unknown kernel {unknown[0]!r}; choose from {', '.join(KERNELS)}")
    records = bench_attention(backends, kernels, args.T, causal=not args.bidirectional, budget_s=args.budget)
    sections = {"attention": (records, attention_markdown(records))}
    return publish(args, sections, plot_attention(records, out_dir(args), args.name))


def add_parser(bench: Any) -> None:
    p = bench.add_parser("attention", help="every attention kernel x backend x T, forward and forward+backward")
    p.add_argument(
        "--backend",
        help="comma-separated, e.g. numpy,torch,torch:cuda,cupy,jax@compiled [all available, jax compiled too]",
    )
    p.add_argument("--T", type=number_list(), help="comma-separated sequence lengths [CPU 256..4096, GPU 256..16384]")
    p.add_argument("--kernels", help="comma-separated kernel names [all that run on each backend]")
    p.add_argument("--dtype", default="float32", choices=FLOAT_DTYPES)
    p.add_argument("--bidirectional", action="store_true", help="no causal mask")
    p.add_argument("--budget", type=POSITIVE, default=2.0, help="seconds of timing per kernel and T [2]")
    add_output_args(p, "attention")
    p.set_defaults(func=cmd)
