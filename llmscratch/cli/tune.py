"""``llmscratch tune``: the GEMM choice of every product a training step makes, measured until it agrees."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..training.config import FIELDS, preset_names
from .args import add_config_flags


def cmd_tune(args: argparse.Namespace) -> int:
    from ..kernels.cpu_fused import gemm_choices
    from ..training.config import resolve_config
    from ..training.trainer import Trainer
    from ..util.errors import ConfigError

    overrides = {name: getattr(args, name) for name in FIELDS}
    cfg = dataclasses.replace(resolve_config(args.preset, args.config, **overrides), out_dir=None, max_iters=1)
    if cfg.dtype == "float64":
        raise ConfigError("float64 always takes the C++ GEMM (its sums are the same in every process): nothing to tune")
    trainer = Trainer(cfg, progress=False)
    try:
        if trainer.model.op_set.name != "cpu-fused":
            raise ConfigError(
                f"tune measures the cpu-fused kernels' GEMM choices, and {cfg.backend} on {cfg.device or 'the CPU'} "
                f"runs the {trainer.model.op_set.name} op set; tune numpy or torch on the CPU"
            )
        choices = gemm_choices()
        choices.settling = True
        try:
            trainer.step(0)  # every product of a training step, each class measured until it agrees
        finally:
            choices.settling = False
    finally:
        trainer.close()
    print("| shape class (backend/dtype/threads/layout/MxNxK) | choice | own µs | vendor µs | spread | agrees |")
    print("|---|---|---|---|---|---|")
    for key, r in sorted(choices.settled.items()):
        print(f"| {key} | {r['choice']} | {r['own_us']} | {r['vendor_us']} | {r['spread']} | {r['agree']} |")
    unsettled = [key for key, r in choices.settled.items() if not r["agree"]]
    print(f"written to {choices.path}" + (f"; {len(unsettled)} did not agree (a busy machine?)" if unsettled else ""))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "tune", help="measure the C++-GEMM-or-BLAS choice of every product a config's training step makes"
    )
    p.add_argument("--preset", help=f"one of: {', '.join(preset_names())}")
    p.add_argument("--config", help="a TOML file of config values")
    add_config_flags(p)
    p.set_defaults(func=cmd_tune)
