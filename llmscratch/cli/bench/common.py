"""What the bench suites share: the --backend list, the --out/--name flags, printing and writing a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...backends import available_backends, backend_names, get_backend
from ...util.errors import ConfigError, LLMScratchError
from .report import write_report


def backend_list(text: str | None, extra: tuple[str, ...] = ()) -> list[str]:
    """'numpy,torch:cuda' -> ['numpy', 'torch:cuda'] (each name checked; ``extra``: more names a suite takes);
    None -> every backend available here (GPUs included)."""
    if text:
        specs = [b.strip() for b in text.split(",") if b.strip()]
        known = (*backend_names(), *extra)
        for spec in specs:
            name = spec.partition("@")[0].partition(":")[0]
            if name not in known:
                raise ConfigError(f"--backend: unknown backend {name!r} in {spec!r}; choose from {', '.join(known)}")
        return specs
    names = [n for n in available_backends() if n != "strict"]
    if "torch" in names:
        try:
            get_backend("torch", "cuda")
            names.append("torch:cuda")
        except LLMScratchError:
            pass
    return names


def cpu_backends(text: str | None) -> list[str]:
    """The --backend list without device specs (torch:cuda): the suites that time CPU backends only."""
    return [b for b in backend_list(text) if ":" not in b]


def add_output_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", default="benchmarks/results", help="the folder for <name>.json, .md and plots")
    p.add_argument("--name", default=name, help=f"the base name of the files written [{name}]")


def out_dir(args: argparse.Namespace) -> Path:
    """The report's folder, made if needed (plots are drawn into it before the report is written)."""
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish(args: argparse.Namespace, sections: dict[str, tuple[list[dict], str]], plots: Any = ()) -> int:
    """Print each section's table, write <out>/<name>.json and .md (and the plots), say what was written."""
    for _, table in sections.values():
        print(table)
    paths = write_report(args.out, args.name, sections, plots)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
