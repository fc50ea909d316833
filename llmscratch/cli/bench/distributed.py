"""Data-parallel scaling on this machine: N processes × 1 thread against 1 process × 1 thread, launched by
torchrun (gloo), the same config and global batch (gradient_accumulation_steps split across the processes).
Runs alternate between the process counts, round by round; the figures are medians of the logged windows
after the first (each window's tokens/s counts every rank's tokens) and of the all-reduce time per step."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from ..args import COUNT, number_list
from .common import add_output_args, cpu_backends, publish
from .report import markdown_table

_RUN = """
import json, os, sys
import llmscratch
result = llmscratch.train(progress=False, **json.loads(sys.argv[1]))
if os.environ.get("RANK", "0") == "0":
    steps = [h for h in result.history if h["train_loss"] is not None]
    windows = {h["step"] // result.config.log_interval: h for h in steps}  # one entry per logged window
    print("RESULT " + json.dumps([[h["tokens_per_s"], h.get("allreduce_ms", 0.0)] for h in windows.values()]))
"""


def run_once(n_procs: int, values: dict[str, Any]) -> list[list[float]]:
    """One torchrun launch; -> [tokens/s, all-reduce ms per step] of each logged window."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}"]
    script = ["--no-python", sys.executable, "-c", _RUN, json.dumps(values)]  # each rank runs python -c _RUN
    proc = subprocess.run([*launch, *script], env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln and "ChildFailedError" not in ln]
        raise RuntimeError(f"the {n_procs}-process run failed: {' | '.join(errors[:3]) or proc.stderr[-500:]}")
    return json.loads(line[len("RESULT ") :])


def bench_distributed(
    backends: list[str],
    procs: tuple[int, ...] = (1, 2),
    rounds: int = 3,
    preset: str = "shakespeare_char_cpu",
    max_iters: int = 100,
    **overrides: Any,
) -> list[dict[str, Any]]:
    records = []
    for backend in backends:
        values = {
            "preset": preset,
            "backend": backend,
            "max_iters": max_iters,
            "eval_interval": max_iters,
            "eval_iters": 2,
            "log_interval": max(1, min(10, max_iters // 4)),  # windows to time, the first dropped
            "gradient_accumulation_steps": max(procs),
        } | overrides
        windows: dict[int, list[list[float]]] = {n: [] for n in procs}
        for _ in range(rounds):
            for n in procs:
                windows[n] += run_once(n, values)[1:]  # the first window includes warm-up
        base = statistics.median(w[0] for w in windows[procs[0]])
        for n in procs:
            tps = statistics.median(w[0] for w in windows[n])
            records.append(
                {
                    "backend": backend,
                    "processes": n,
                    "threads_per_process": 1,
                    "preset": preset,
                    "gradient_accumulation_steps": values["gradient_accumulation_steps"],
                    "tokens_per_s": tps,
                    "speedup": tps / base,
                    "efficiency": tps / base / (n / procs[0]),
                    "allreduce_ms_per_step": statistics.median(w[1] for w in windows[n]),
                }
            )
    return records


COLUMNS = [
    ("backend", "backend", ""),
    ("processes × threads", "processes", ""),
    ("tokens/s (all ranks)", "tokens_per_s", ",.0f"),
    ("× 1 process", "speedup", ".2f"),
    ("scaling efficiency", "efficiency", ".0%"),
    ("all-reduce ms/step", "allreduce_ms_per_step", ".2f"),
]


def cmd(args: argparse.Namespace) -> int:
    records = bench_distributed(
        cpu_backends(args.backend), tuple(args.procs), rounds=args.rounds, preset=args.preset, max_iters=args.max_iters
    )
    return publish(
        args, {f"data-parallel on torchrun (gloo), {args.preset}": (records, markdown_table(records, COLUMNS))}
    )


def add_parser(bench: Any) -> None:
    p = bench.add_parser("dist", help="data-parallel: N processes × 1 thread vs 1 process × 1 thread (torchrun, gloo)")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument(
        "--procs", type=number_list(), default=[1, 2], help="process counts to compare, the first is the baseline [1,2]"
    )
    p.add_argument("--preset", default="shakespeare_char_cpu")
    p.add_argument("--rounds", type=COUNT, default=3, help="launches per process count, alternating [3]")
    p.add_argument("--max-iters", type=COUNT, default=100, help="steps per launch [100]")
    add_output_args(p, "dist")
    p.set_defaults(func=cmd)
