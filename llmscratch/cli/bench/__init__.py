"""``llmscratch bench``: each suite (attention kernels, op sets, training, tasks, data-parallel, generation,
tokenizers, data preparation) is one module here that owns its measurement, its table columns and its
command-line flags.

Each measurement is one JSON-able record; ``report`` turns a list of them into JSON, a markdown table and
PNG plots. Timings are medians after warm-up, taken with ``backend.synchronize()`` on GPUs.
"""

from __future__ import annotations

from typing import Any

SUITES = ("attention", "train", "tasks", "lora", "distributed", "ops", "generation", "tokenizer", "data")


def add_commands(sub: Any) -> None:
    import importlib

    bench = sub.add_parser(
        "bench", help="benchmarks: attention kernels, op sets, training throughput, tasks, generation, tokenizers, data"
    ).add_subparsers(dest="suite", required=True)
    for suite in SUITES:
        importlib.import_module(f"{__name__}.{suite}").add_parser(bench)
