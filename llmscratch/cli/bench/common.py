"""What the bench suites share: the --backend list, the --out/--name flags, printing and writing a report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...backends import available_backends, backend_names, get_backend
from ...training.precision import PRECISIONS
from ...util.errors import ConfigError, LLMScratchError
from .report import write_report

COMPILED = "compiled"  # the option of a spec whose step is compiled into one program (Backend.compile)


@dataclass(frozen=True)
class Spec:
    """A contestant: "jax:gpu@bf16+compiled" -> a backend name, its device, a precision (None: the
    config's) and whether its work is compiled; ``text`` is the spec as written, the name in reports."""

    text: str
    name: str
    device: str | None = None
    precision: str | None = None
    compiled: bool = False


def parse_spec(text: str, known: tuple[str, ...] = ()) -> Spec:
    """A --backend entry as a Spec; an unknown backend (when ``known`` is given) or option is one line."""
    backend, _, options = text.partition("@")
    name, _, device = backend.partition(":")
    if known and name not in known:
        raise ConfigError(f"--backend: unknown backend {name!r} in {text!r}; choose from {', '.join(known)}")
    chosen = [o for o in options.split("+") if o]
    wrong = [o for o in chosen if o != COMPILED and o not in PRECISIONS]
    if wrong or len([o for o in chosen if o in PRECISIONS]) > 1:
        raise ConfigError(
            f"--backend: {text!r}: after @ come one precision ({', '.join(PRECISIONS)}) and/or {COMPILED!r}, "
            "joined by + (jax@bf16+compiled)"
        )
    precision = next((o for o in chosen if o in PRECISIONS), None)
    return Spec(text, name, device or None, precision, COMPILED in chosen)


def backend_list(text: str | None, extra: tuple[str, ...] = (), compiled: bool = False) -> list[str]:
    """'numpy,torch:cuda' -> ['numpy', 'torch:cuda'] (each checked by parse_spec; ``extra``: more names a
    suite takes); None -> every backend available here (GPUs included), and with ``compiled`` (a suite that
    times compiled work) each one that compiles (Backend.compile) compiled too: "jax@compiled"."""
    if text:
        specs = [b.strip() for b in text.split(",") if b.strip()]
        for spec in specs:
            parse_spec(spec, (*backend_names(), *extra))
        return specs
    names = []
    for name in available_backends():
        if name == "strict":
            continue
        names.append(name)
        if compiled and get_backend(name).compiles:
            names.append(f"{name}@{COMPILED}")
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
