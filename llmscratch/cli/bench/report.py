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


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files (Agg), or None where matplotlib is not installed: no plots then."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


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
