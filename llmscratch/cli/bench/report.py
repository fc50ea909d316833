"""Benchmark records -> <name>.json, <name>.md (a markdown table) and PNG plots, in one output directory."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...util.atomic import atomic_write

VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")  # what decides the kernels' speed


def cpu_info() -> dict[str, Any]:
    """The CPU's model name, family and model, and its vector extensions (Linux /proc/cpuinfo; else empty)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name"),
        "cpu_family_model": f"{fields.get('cpu family')}/{fields.get('model')}",
        "cpu_vector_flags": " ".join(f for f in VECTOR_FLAGS if f in flags),
    }


def machine_info() -> dict[str, Any]:
    import numpy

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **cpu_info(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """columns: (header, key, format spec)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key), spec) for _, key, spec in columns) + " |")
    return "\n".join(lines)


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


def train_markdown(records: list[dict[str, Any]]) -> str:
    rows = [
        dict(
            r,
            peak_mib=None if r.get("peak_step_mem_bytes") is None else r["peak_step_mem_bytes"] / 2**20,
            rss_mib=None if r.get("peak_rss_bytes") is None else r["peak_rss_bytes"] / 2**20,
        )
        for r in records
    ]
    return markdown_table(
        rows,
        [
            ("contestant", "contestant", ""),
            ("device", "device", ""),
            ("attention", "kernel", ""),
            ("ms/step", "step_ms", ".1f"),
            ("linear matmuls ms", "linear_matmul_ms", ".1f"),
            ("the rest ms", "rest_ms", ".1f"),
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("× reference", "vs_reference", ".2f"),
            ("MFU", "mfu", ".1%"),
            ("matmul peak GFLOP/s", "matmul_peak_gflops", ".0f"),
            ("step memory MiB", "peak_mib", ".1f"),
            ("process peak RSS MiB", "rss_mib", ".0f"),
        ],
    )


def full_runs_markdown(records: list[dict[str, Any]]) -> str:
    rows = [dict(r, rss_mib=None if r.get("peak_rss_bytes") is None else r["peak_rss_bytes"] / 2**20) for r in records]
    return markdown_table(
        rows,
        [
            ("contestant", "contestant", ""),
            ("steps", "final_step", ""),
            ("val loss", "final_val_loss", ".4f"),
            ("wall s", "seconds", ".1f"),
            ("peak RSS MiB", "rss_mib", ".0f"),
            ("status", "status", ""),
        ],
    )


def _pyplot() -> Any:
    """matplotlib.pyplot drawing to files (Agg), or None where matplotlib is not installed: no plots then."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_attention(records: list[dict[str, Any]], out: Path, name: str) -> list[Path]:
    """time vs T and memory vs T (log-log), one line per backend/kernel, forward+backward."""
    plt = _pyplot()
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


def plot_train(records: list[dict[str, Any]], out: Path, name: str) -> list[Path]:
    plt = _pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['contestant']}\n{r['kernel']}" for r in records]
    ax.bar(
        labels, [r["tokens_per_s"] for r in records], color=["#888" if "reference" in lab else "#3a7" for lab in labels]
    )
    ax.set(ylabel="tokens / s", title=f"training throughput, {records[0]['preset'] or 'custom'}")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = out / f"{name}_tokens_per_s.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write_report(
    out_dir: str | os.PathLike, name: str, sections: dict[str, tuple[list[dict], str]], plots: Sequence[Path] = ()
) -> list[Path]:
    """sections: title -> (records, markdown). Writes <name>.json and <name>.md; returns every path written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    atomic_write(
        out / f"{name}.json", json.dumps({"machine": info, **{t: r for t, (r, _) in sections.items()}}, indent=1)
    )
    md = [f"# {name}", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    for title, (_, table) in sections.items():
        md += [f"## {title}", "", table, ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    atomic_write(out / f"{name}.md", "\n".join(md) + "\n")
    return [out / f"{name}.json", out / f"{name}.md", *plots]
