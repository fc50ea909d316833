"""The commands that write files for later: ``convert`` (between checkpoint formats) and ``demo`` (demo data)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_convert(args: argparse.Namespace) -> int:
    from ..training.checkpoint import convert

    print(f"wrote {convert(args.src, args.dst, args.to, dtype=args.dtype)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..data import demos

    if args.name == "numbers":
        paths = demos.numbers_dataset(args.out)
    elif args.name == "chat":
        paths = demos.chat_dataset(args.out)
    else:
        from ..data.corpora import load_text

        paths = demos.speakers_dataset(load_text("shakespeare")[1], args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="write a demo task's data: numbers (English -> French), speakers, chat (pretrain -> sft)"
    )
    p.add_argument("name", choices=["numbers", "speakers", "chat"])
    p.add_argument("--out", default="demo", help="the folder to write into [demo]")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "convert", help="a checkpoint or Hugging Face directory -> the other format (GPT-2, Llama, BERT)"
    )
    p.add_argument("src", help="a llmscratch output/checkpoint directory or a Hugging Face model directory")
    p.add_argument("dst", help="the directory to write (new or empty)")
    p.add_argument("--to", required=True, choices=["hf", "llmscratch"], help="the format to write")
    p.add_argument("--dtype", default=None, help="float32 | float64 | bfloat16 (default: the source's)")
    p.set_defaults(func=cmd_convert)
