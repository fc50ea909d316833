"""The commands that draw: ``plot`` (a run's training curves) and ``attention`` (heatmaps of a text)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..training.checkpoint import load
from ..training.metrics_log import FILE, read_metrics
from ..util.errors import LLMScratchError
from ..viz.attention import PARTS, part_of
from .args import add_checkpoint_args


def cmd_plot(args: argparse.Namespace) -> int:
    from ..viz import training_curves

    log = Path(args.checkpoint) / FILE  # written as the run goes: it has the steps after the last checkpoint too
    history = read_metrics(log) if log.is_file() else load(args.checkpoint, backend="numpy").state.get("history")
    if not history:
        raise LLMScratchError(
            f"{args.checkpoint} has no training history (a converted or Hugging Face model): train it with "
            "llmscratch train, or plot a run's own out directory"
        )
    training_curves(history, title=str(args.checkpoint), out=args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from ..viz import attention_heads, attention_heatmap, attention_of_text

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device, verify=args.verify)
    attention = attention_of_text(ckpt, args.text, args.target)
    layers = attention.layers(args.part)
    if not 0 <= args.layer < len(layers):
        what = f"{len(layers)} {part_of(layers[0])} attention layers"
        raise LLMScratchError(f"--layer {args.layer}: the model has {what}, 0 to {len(layers) - 1}")
    name = layers[args.layer]
    probs, (queries, keys) = attention.maps[name], attention.labels(name)
    if args.head is None:
        attention_heads(probs, queries, keys, title=name, out=args.out)
    elif not 0 <= args.head < probs.shape[0]:
        raise LLMScratchError(f"--head {args.head}: {name} has {probs.shape[0]} heads, 0 to {probs.shape[0] - 1}")
    else:
        attention_heatmap(probs[args.head], queries, keys, title=f"{name}, head {args.head}", out=args.out)
    print(f"wrote {args.out}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "plot", help="training curves of a run (its metrics.jsonl, else its checkpoint's history) as a PNG"
    )
    p.add_argument("--checkpoint", default="out", help="a training --out directory or a checkpoint directory [out]")
    p.add_argument("--out", default="curves.png", help="the PNG to write [curves.png]")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("attention", help="attention heatmaps of a text: every head of a layer, or one (PNG)")
    add_checkpoint_args(p)
    p.add_argument("--text", required=True, help="the text to look at (within the model's context)")
    p.add_argument("--layer", type=int, default=0, help="the layer, from 0 [0]")
    p.add_argument("--head", type=int, default=None, help="one head, from 0 [all heads of the layer]")
    p.add_argument(
        "--part",
        choices=PARTS,
        default=None,
        help="a translator's encoder, decoder or cross-attention [cross for a translator, else the model's own]",
    )
    p.add_argument(
        "--target", default=None, help="a translator's target text [the model's own greedy translation of --text]"
    )
    p.add_argument("--out", default="attention.png", help="the PNG to write [attention.png]")
    p.set_defaults(func=cmd_attention)
