"""The op sets side by side: each op an op set supplies, Array API vs fused, at the shapes of a model.

For every backend and op (the MLP's c_fc matmuls; GELU, LayerNorm and the loss, forward and backward; the
gradient norm and one AdamW step over all the model's parameters), the op sets that run there take turns for
several rounds, so a noisy machine's slow phases hit them alike; the figure is the median call. The shapes
are those of a preset's training step: matmuls (B·T,C)·(C,4C) + bias and its weight gradient (C,B·T)·(B·T,4C),
GELU on (B,T,4C), LayerNorm on (B,T,C), the loss on (B,T,V) logits (V = 65, the characters of
tinyshakespeare), AdamW over the preset model's parameters.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ...backends import FLOAT_DTYPES, Backend, get_backend
from ...kernels import OP_SETS, OpSet, get_ops
from ...models import init_params
from ...ops.adamw import AdamWStep
from ...training.config import resolve_config
from ...util.errors import ConfigError
from ..args import COUNT
from .common import add_output_args, cpu_backends, publish
from .report import markdown_table

VOCAB = 65  # tinyshakespeare's characters


def _calls(bk: Backend, op_set: OpSet, B: int, T: int, C: int, V: int, params: dict[str, Any]) -> dict[str, Callable]:
    """op name -> a call of it on fresh inputs of the step's shapes"""
    rng = np.random.default_rng(0)
    h, dh = (bk.from_numpy(rng.standard_normal((B, T, 4 * C))) for _ in range(2))
    x, dx = (bk.from_numpy(rng.standard_normal((B, T, C))) for _ in range(2))
    w = bk.from_numpy(rng.standard_normal(C))
    w_fc, b_fc = bk.from_numpy(rng.standard_normal((C, 4 * C))), bk.from_numpy(rng.standard_normal(4 * C))
    x2, dh2 = bk.xp.reshape(x, (B * T, C)), bk.xp.reshape(dh, (B * T, 4 * C))
    logits, targets = bk.from_numpy(rng.standard_normal((B, T, V))), bk.from_numpy(rng.integers(0, V, (B, T)))
    _, loss_cache = op_set.cross_entropy_forward(bk, logits, targets)
    _, gelu_cache = op_set.gelu_forward(bk, h)
    _, ln_cache = op_set.layernorm_forward(bk, x, w)
    grads = {n: bk.from_numpy(rng.standard_normal(p.shape) * 1e-2) for n, p in params.items()}
    moments = {n: (bk.zeros(p.shape), bk.zeros(p.shape)) for n, p in params.items()}

    names = list(params)
    tensors = [[params[n] for n in names], [grads[n] for n in names], *([moments[n][i] for n in names] for i in (0, 1))]
    decays = [0.9999 if params[n].ndim >= 2 else 1.0 for n in names]

    def adamw() -> None:
        op_set.adamw_update(bk, *tensors, decays, AdamWStep(0.9, 0.99, 1e-3, 1.0, 1e-8))

    return {
        "matmul x·w + b (c_fc forward)": lambda: op_set.matmul(bk, x2, w_fc, b_fc),
        "matmul xᵀ·dh (c_fc weight gradient)": lambda: op_set.matmul(bk, bk.xp.matrix_transpose(x2), dh2),
        "gelu forward": lambda: op_set.gelu_forward(bk, h),
        "gelu backward": lambda: op_set.gelu_backward(bk, dh, gelu_cache),
        "layernorm forward": lambda: op_set.layernorm_forward(bk, x, w),
        "layernorm backward": lambda: op_set.layernorm_backward(bk, dx, ln_cache),
        "cross-entropy forward": lambda: op_set.cross_entropy_forward(bk, logits, targets),
        "cross-entropy backward": lambda: op_set.cross_entropy_backward(bk, 1.0, loss_cache),
        "gradient norm (all parameters)": lambda: op_set.grad_norm(bk, tensors[1]),
        "adamw step (all parameters)": adamw,
    }


def bench_ops(backends: list[Backend], preset: str = "shakespeare_char_cpu", rounds: int = 7, calls: int = 30) -> list:
    """One record per (backend, op, op set): median µs per call, and the speed-up over the array-api op set."""
    cfg = resolve_config(preset)
    records = []
    for bk in backends:
        sets = {}
        for name in OP_SETS:
            try:
                sets[name] = get_ops(name, bk)
            except ConfigError:  # an op set that does not run here is left out
                continue
        params = init_params(cfg.model_config(VOCAB), bk)
        runners = {
            name: _calls(bk, op_set, cfg.batch_size, cfg.block_size, cfg.n_embd, VOCAB, params)
            for name, op_set in sets.items()
        }
        ops = list(next(iter(runners.values())))
        for op in ops:
            times: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(rounds):
                for name, run in runners.items():
                    run[op]()  # warm-up
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        run[op]()
                    bk.synchronize()
                    times[name].append((time.perf_counter() - t0) / calls)
            base = statistics.median(times["array-api"])
            for name, ts in times.items():
                med = statistics.median(ts)
                records.append(
                    {
                        "backend": bk.name,
                        "device": bk.device_label,
                        "dtype": bk.dtype_name,
                        "op": op,
                        "ops": name,
                        "time_us": med * 1e6,
                        "vs_array_api": base / med,
                    }
                )
    return records


COLUMNS = [
    ("backend", "backend", ""),
    ("op", "op", ""),
    ("op set", "ops", ""),
    ("µs per call", "time_us", ".1f"),
    ("× faster than array-api", "vs_array_api", ".2f"),
]


def cmd(args: argparse.Namespace) -> int:
    backends = [get_backend(spec, dtype=args.dtype) for spec in cpu_backends(args.backend)]
    records = bench_ops(backends, args.preset, rounds=args.rounds)
    return publish(args, {f"the op sets' ops at the {args.preset} shapes": (records, markdown_table(records, COLUMNS))})


def add_parser(bench: Any) -> None:
    p = bench.add_parser("ops", help="GELU, LayerNorm, AdamW: each op set at a preset's shapes, side by side")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--preset", default="shakespeare_char_cpu")
    p.add_argument("--dtype", default="float32", choices=FLOAT_DTYPES)
    p.add_argument("--rounds", type=COUNT, default=7, help="rounds of interleaved timing [7]")
    add_output_args(p, "ops")
    p.set_defaults(func=cmd)
