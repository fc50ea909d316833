"""The commands that use a trained model: sample, chat, classify, translate, eval. Each works on the checkpoints
of the tasks that list it in their ``uses`` (llmscratch.tasks), and says which fit otherwise."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..generation.text import SAMPLE_DEFAULTS
from ..tasks.uses import tasks_for
from ..training.checkpoint import load
from .args import (
    add_checkpoint_args,
    add_generation_args,
    add_quantize_args,
    generation_options,
    number,
    texts_or_stdin,
)


def _load(args: argparse.Namespace) -> Any:
    return load(
        args.checkpoint,
        backend=args.backend,
        device=args.device,
        verify=args.verify,
        quantize=args.quantize,
        group=args.quantize_group,
    )


def cmd_sample(args: argparse.Namespace) -> int:
    ckpt = _load(args)
    options = generation_options(args)
    if args.stream:
        print(args.prompt, end="", flush=True)
        for piece in ckpt.sample(args.prompt, args.max_new_tokens, stream=True, **options):
            print(piece, end="", flush=True)
        print()
    else:
        print(ckpt.sample(args.prompt, args.max_new_tokens, **options))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat_repl import ChatSession, run

    return run(ChatSession(_load(args), generation_options(args), args.max_new_tokens, args.system))


def cmd_classify(args: argparse.Namespace) -> int:
    results = _load(args).classify(texts_or_stdin(args.texts), probabilities=args.probabilities)
    for r in results:
        print(json.dumps({k: round(v, 4) for k, v in r.items()}, ensure_ascii=False) if args.probabilities else r)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    for text in _load(args).translate(texts_or_stdin(args.texts), **generation_options(args)):
        print(text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    for name, value in _load(args).evaluate(args.data).items():
        print(f"{name} {value:.4f}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("sample", help=f"generate text from a checkpoint ({tasks_for('sample')})")
    add_checkpoint_args(p)
    add_quantize_args(p)
    p.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    p.add_argument("--max-new-tokens", type=number(int, 0), default=500)
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    add_generation_args(p, SAMPLE_DEFAULTS)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("chat", help=f"talk to a model with chat tokens ({tasks_for('chat')}); streams each reply")
    add_checkpoint_args(p)
    add_quantize_args(p)
    p.add_argument("--system", help="a system message to start the conversation with")
    p.add_argument("--max-new-tokens", type=number(int, 0), default=200, help="the longest reply [200]")
    add_generation_args(p, SAMPLE_DEFAULTS)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("classify", help=f"label texts, one label per line ({tasks_for('classify')})")
    add_checkpoint_args(p)
    add_quantize_args(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: lines of standard input)")
    p.add_argument("--probabilities", action="store_true", help="print each label's probability as JSON")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("translate", help=f"translate texts, one translation per line ({tasks_for('translate')})")
    add_checkpoint_args(p)
    add_quantize_args(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to translate (default: lines of standard input)")
    add_generation_args(p, {"temperature": 0})  # translate_ids decodes greedily unless told otherwise
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("eval", help=f"a checkpoint's metrics on a data file of its task's format ({tasks_for('eval')})")
    add_checkpoint_args(p)
    add_quantize_args(p)
    p.add_argument("--data", required=True, help="a file in the task's format (CSV/JSONL, TSV/JSONL, text)")
    p.set_defaults(func=cmd_eval)
