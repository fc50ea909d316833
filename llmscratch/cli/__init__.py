"""The ``llmscratch`` command: train, sample, chat, classify, translate, eval, plot, attention, prepare, convert,
demo, tokenizer, tune, bench.

    llmscratch train                                   # the default small model on the embedded corpus
    llmscratch train --preset shakespeare_char_cpu --backend torch
    llmscratch train --n-layer 6 --learning-rate 3e-4 --max-iters 5000 --out out-big
    llmscratch train --resume --out out-big            # continue where it stopped
    llmscratch sample --checkpoint out --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 50
    llmscratch train --task classify --data reviews.csv --out out-cls      # CSV text,label or JSONL
    llmscratch classify --checkpoint out-cls "a line to classify"          # or lines on standard input
    llmscratch train --task seq2seq --data pairs.tsv --out out-mt          # TSV source<TAB>target or JSONL
    llmscratch translate --checkpoint out-mt "three hundred and seventy-one"
    llmscratch eval --checkpoint out-mt --data test.tsv                    # exact_match 0.993
    llmscratch convert out hf-out --to hf                                  # for transformers' from_pretrained
    llmscratch sample --checkpoint gpt2-dir --prompt "Hello"               # a Hugging Face directory works too
    llmscratch plot --checkpoint out --out curves.png                      # loss, learning rate, tokens/s
    llmscratch attention --checkpoint out --text "ROMEO:" --layer 1 --out att.png     # every head, or --head
    llmscratch attention --checkpoint out-mt --text "forty-two" --part cross          # a translator's parts

Every TrainConfig field is a --kebab-case flag (booleans also take --no-...). Errors print one line and
exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..util.errors import LLMScratchError
from . import bench, files, pictures, tokenizer, train, tune, use
from .args import Parser

GROUPS = (train, use, pictures, files, tokenizer, tune, bench)  # each adds its commands to the parser


def build_parser() -> Parser:
    parser = Parser(prog="llmscratch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
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
