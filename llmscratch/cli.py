"""The ``llmscratch`` command: train, sample, tokenizer, bench.

    llmscratch train                                   # the default small model on the embedded corpus
    llmscratch train --preset shakespeare_char_cpu --backend torch
    llmscratch train --n-layer 6 --learning-rate 3e-4 --max-iters 5000 --out out-big
    llmscratch train --resume --out out-big            # continue where it stopped
    llmscratch sample --checkpoint out --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 50

Every TrainConfig field is a --kebab-case flag (booleans also take --no-...). Errors print one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING
from typing import Any, get_args, get_type_hints

from .config import FIELDS, TrainConfig, preset_names
from .errors import LLMScratchError

# flags whose name differs from the config field
FLAG_NAMES = {"out_dir": "--out"}


def _flag_type(hint: Any) -> Any:
    """int | None -> int, etc.; bool stays bool."""
    return next((t for t in (get_args(hint) or (hint,)) if t is not type(None)), str)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = get_type_hints(TrainConfig)
    group = parser.add_argument_group("config (any TrainConfig field; default in brackets)")
    for name, f in FIELDS.items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        kind = _flag_type(hints[name])
        default = None if f.default is MISSING else f.default
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"[{default}]")
        else:
            group.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
                               help=f"[{default}]")


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    overrides = {name: getattr(args, name) for name in FIELDS}
    overrides["out_dir"] = overrides["out_dir"] or "out"
    result = train(preset=args.preset, config=args.config, resume=args.resume, progress=not args.quiet, **overrides)
    last = result.history[-1] if result.history else {}
    print(f"done at step {last.get('step')}: val loss {result.val_loss}; checkpoint: {result.checkpoint_dir}")
    if args.sample_tokens > 0:
        print("---- sample ----")
        print(result.sample(max_new_tokens=args.sample_tokens, seed=result.config.seed))
    return 130 if result.interrupted else 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .checkpoint import load

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    text = ckpt.sample(args.prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                       top_p=args.top_p, seed=args.seed)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmscratch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a GPT (the default: a small model on the embedded corpus)")
    p.add_argument("--preset", help=f"one of: {', '.join(preset_names())}")
    p.add_argument("--config", help="a TOML file of config values")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--sample-tokens", type=int, default=200, help="tokens to sample at the end [200]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", default="out", help="a training --out directory or a checkpoint directory")
    p.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0 picks the most likely token")
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="run on another backend than the one it was trained on")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LLMScratchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
