"""The commands that write files for later: ``prepare`` (a corpus tokenized into shards), ``convert`` (between
checkpoint formats) and ``demo`` (demo data)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..data.prepare import SHARD_TOKENS, prepare
from .args import COUNT, FRACTION, add_quantize_args


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..tokenizers import load

    tokenizer = load(args.tokenizer)
    try:
        report = prepare(
            args.data,
            tokenizer,
            args.out,
            workers=args.workers,
            val_fraction=args.val_fraction,
            text_field=args.text_field,
            separator=args.doc_separator.encode().decode("unicode_escape") if args.doc_separator else None,
            shard_tokens=args.shard_tokens,
            itemsize={"uint16": 2, "uint32": 4}.get(args.dtype),
            progress=sys.stderr.isatty(),
        )
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue where it stopped ({args.out})", file=sys.stderr)
        return 130
    if report.already:
        print(f"{report.folder} already holds this corpus, prepared; nothing to do")
        return 0
    t, d, b = report.tokens, report.documents, report.text_bytes
    rate = sum(b.values()) / 1e6 / max(report.seconds, 1e-9)
    print(
        f"prepared {report.folder}: train {t['train']:,} tokens ({d['train']:,} documents), val {t['val']:,} tokens "
        f"({d['val']:,} documents); {sum(b.values()) / sum(t.values()):.2f} bytes/token; {report.seconds:.1f} s, "
        f"{rate:.1f} MB/s"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..training.checkpoint import convert

    written = convert(args.src, args.dst, args.to, args.dtype, args.quantize, args.quantize_group, args.merge_lora)
    print(f"wrote {written}")
    return 0


def _demos() -> Any:
    from ..data import demos

    return demos


def _speakers(out: str) -> Any:
    from ..data.corpora import load_text

    return _demos().speakers_dataset(load_text("shakespeare")[1], out)


DEMOS = {  # name -> (what it is, a function of the folder that writes its files and gives their paths)
    "numbers": ("English -> French numbers (seq2seq)", lambda out: _demos().numbers_dataset(out)),
    "speakers": ("who speaks a Shakespeare line (classify)", _speakers),
    "chat": ("pretrain -> sft", lambda out: _demos().chat_dataset(out)),
    "arithmetic": (
        "word problems: pretrain -> sft -> dpo -> rl",
        lambda out: _demos().arithmetic_dataset(out).values(),
    ),
}


def cmd_demo(args: argparse.Namespace) -> int:
    paths = DEMOS[args.name][1](args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("prepare", help="tokenize a corpus of any size once, into token shards training reads")
    p.add_argument("--data", nargs="+", required=True, help="text files, folders, globs, JSONL, Parquet or Arrow files")
    p.add_argument("--tokenizer", required=True, help="a tokenizer: ours, tokenizer.json, vocab.txt, or a folder")
    p.add_argument("--out", required=True, help="the directory to write (new, or an interrupted prepare's)")
    p.add_argument("--workers", type=COUNT, default=min(4, os.cpu_count() or 1), help="encoding processes [cores, 4]")
    p.add_argument("--val-fraction", type=FRACTION, default=0.1, help="documents held out, 0..1 [0.1]")
    p.add_argument("--text-field", default="text", help="JSONL / Parquet / Arrow: the text's field [text]")
    p.add_argument(
        "--doc-separator",
        help="what divides a text file into documents, e.g. '\\n\\n' [the tokenizer's <|endoftext|>; else whole files]",
    )
    p.add_argument("--shard-tokens", type=COUNT, default=SHARD_TOKENS, help=f"tokens per shard [{SHARD_TOKENS:,}]")
    p.add_argument("--dtype", choices=["auto", "uint16", "uint32"], default="auto", help="token ids' type [auto]")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("demo", help="write a demo's data: " + "; ".join(f"{n} ({h})" for n, (h, _) in DEMOS.items()))
    p.add_argument("name", choices=list(DEMOS))
    p.add_argument("--out", default="demo", help="the folder to write into [demo]")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "convert", help="a checkpoint or Hugging Face directory -> the other format (GPT-2, Llama, BERT)"
    )
    p.add_argument("src", help="a llmscratch output/checkpoint directory or a Hugging Face model directory")
    p.add_argument("dst", help="the directory to write (new or empty)")
    p.add_argument("--to", required=True, choices=["hf", "llmscratch"], help="the format to write")
    p.add_argument("--dtype", default=None, help="float32 | float64 | bfloat16 (default: the source's)")
    add_quantize_args(p)
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="fold a LoRA model's adapters into its weights (else --to hf writes them as a PEFT adapter beside it)",
    )
    p.set_defaults(func=cmd_convert)
