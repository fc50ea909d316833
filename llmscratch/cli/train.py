"""``llmscratch train``: any task, every TrainConfig field a flag."""

from __future__ import annotations

import argparse
from typing import Any

from ..layers.linear import QUANTIZED_NO_TRAINING
from ..tasks import TASKS
from ..training.config import FIELDS, preset_names
from ..util.errors import ConfigError
from .args import add_config_flags, number


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.trainer import train

    if args.quantize:
        raise ConfigError(
            f"--quantize: {QUANTIZED_NO_TRAINING}; quantize the trained model with sample, eval or convert"
        )
    overrides = {name: getattr(args, name) for name in FIELDS}
    overrides["out_dir"] = overrides["out_dir"] or "out"
    result = train(preset=args.preset, config=args.config, resume=args.resume, progress=not args.quiet, **overrides)
    if not result.is_main:  # in a data-parallel run rank 0 alone reports
        return 130 if result.interrupted else 0
    last = result.history[-1] if result.history else {}
    metric = result.task_runner.metric
    shown = "" if metric == "val_loss" or result.last(metric) is None else f", {metric} {result.last(metric):.4f}"
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"done at step {last.get('step')}: val loss {val}{shown}; checkpoint: {result.checkpoint_dir}")
    if args.sample_tokens > 0 and result.task_runner.uses[0] == "sample":  # a model for sampling shows a sample
        print("---- sample ----")
        print(result.sample(max_new_tokens=args.sample_tokens, seed=result.config.seed))
    return 130 if result.interrupted else 0  # stopped by Ctrl-C or SIGTERM on any rank, after a checkpoint


def add_commands(sub: Any) -> None:
    tasks = " | ".join(f"{t.name} ({t.summary})" for t in TASKS.values())
    p = sub.add_parser("train", help=f"train a model: --task {tasks}")
    p.add_argument("--preset", help=f"one of: {', '.join(preset_names())}")
    p.add_argument("--config", help="a TOML file of config values")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--sample-tokens", type=number(int, 0), default=200, help="tokens to sample at the end [200]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--quantize", help="refused: quantization is for inference (sample, chat, eval, convert)")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)
