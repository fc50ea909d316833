"""LoRA against full fine-tuning: the same model (the CPU preset's), the same batches, the same backend;
step time and the memory training holds (weights + gradients + optimizer state, counted from the arrays
themselves, and the process's peak RSS). Each contestant is its own process, taking turns round by round
(tasks.interleaved).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from ...training.config import resolve_config
from ..args import COUNT
from .common import add_output_args, cpu_backends, publish
from .report import markdown_table
from .tasks import interleaved

PRESET = "shakespeare_char_cpu"
MIB = 2**20


def bench_lora(
    backends: list[str], rank: int = 8, targets: str = "q,v", rounds: int = 5, steps: int = 8
) -> list[dict[str, Any]]:
    """One record per (backend, full | lora): ms/step, the state's bytes and × full fine-tuning's."""
    full = resolve_config(PRESET)
    lora = resolve_config(PRESET, lora_rank=rank, lora_targets=targets)
    contestants = {f"{b} {mode}": (b, cfg) for b in backends for mode, cfg in (("full", full), ("lora", lora))}
    runs = interleaved(contestants, rounds, steps)
    records = []
    for label, (info, times) in runs.items():
        backend, mode = label.split(" ")
        state = info["state_bytes"]
        records.append(
            {
                "backend": backend,
                "mode": mode,
                "rank": rank if mode == "lora" else None,
                "targets": targets if mode == "lora" else "all",
                "step_ms": statistics.median(t for _, t in times) * 1e3,
                **{f"{k}_mib": v / MIB for k, v in state.items()},
                "state_mib": sum(state.values()) / MIB,
                "peak_rss_mib": info["rss"] / MIB,
            }
        )
    for rec in records:
        base = next(r for r in records if r["backend"] == rec["backend"] and r["mode"] == "full")
        rec["memory_saving"] = base["state_mib"] / rec["state_mib"]
        rec["speed_vs_full"] = base["step_ms"] / rec["step_ms"]
    return records


COLUMNS = [
    ("backend", "backend", ""),
    ("fine-tuning", "mode", ""),
    ("targets", "targets", ""),
    ("ms/step", "step_ms", ".1f"),
    ("× full's speed", "speed_vs_full", ".2f"),
    ("weights MiB", "weights_mib", ".2f"),
    ("gradients MiB", "gradients_mib", ".2f"),
    ("optimizer MiB", "optimizer_mib", ".2f"),
    ("state MiB", "state_mib", ".2f"),
    ("× less state", "memory_saving", ".2f"),
    ("peak RSS MiB", "peak_rss_mib", ".0f"),
]


def cmd(args: argparse.Namespace) -> int:
    records = bench_lora(cpu_backends(args.backend), args.rank, args.targets, args.rounds, args.steps)
    title = f"LoRA (rank {args.rank} on {args.targets}) vs full fine-tuning, preset {PRESET}"
    return publish(args, {title: (records, markdown_table(records, COLUMNS))})


def add_parser(bench: Any) -> None:
    p = bench.add_parser("lora", help="LoRA vs full fine-tuning: step time and training memory, same batches")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--rank", type=COUNT, default=8, help="the adapters' rank [8]")
    p.add_argument("--targets", default="q,v", help="the projections adapted [q,v]")
    p.add_argument("--rounds", type=COUNT, default=5, help="rounds of interleaved timing [5]")
    p.add_argument("--steps", type=COUNT, default=8, help="steps per round [8]")
    add_output_args(p, "lora")
    p.set_defaults(func=cmd)
