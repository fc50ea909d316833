"""``llmscratch tokenizer train | encode | decode``: byte-level BPE and WordPiece from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..tokenizers import BPETokenizer, WordPieceTokenizer
from .args import COUNT

TRAINERS = {"bpe": BPETokenizer.train, "wordpiece": WordPieceTokenizer.train}


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    import time

    from ..data.corpora import BUILTIN_CORPORA, DEFAULT_CORPUS, load_text
    from ..data.tokenizer_training import train_tokenizer
    from ..tokenizers.wordpiece import BERT_SPECIALS

    if args.special is not None:
        specials = args.special
    else:
        specials = list(BERT_SPECIALS) if args.kind == "wordpiece" else ["<|endoftext|>"]
    settings = {"pattern": args.pattern} if args.kind == "bpe" else {"lowercase": args.lowercase}
    t0 = time.perf_counter()
    if len(args.data) == 1 and args.data[0] in (DEFAULT_CORPUS, *BUILTIN_CORPORA):  # a built-in corpus, in memory
        _, text = load_text(args.data[0])
        tok: Any = TRAINERS[args.kind](text, args.vocab_size, *settings.values(), special_tokens=specials)
        n = len(tok.encode(text, allowed_special="none"))
        shown = f"{len(text) / n:.2f} characters/token on the training text"
    else:  # files of any size, read in a streaming pass
        tok = train_tokenizer(args.kind, args.data, args.vocab_size, specials, args.workers, **settings)
        shown = f"from {', '.join(args.data)}"
    seconds = time.perf_counter() - t0
    if args.kind == "wordpiece" and args.out.endswith(".txt"):
        tok.save_vocab_txt(args.out)
    else:
        tok.save(args.out)
    print(f"trained {tok.vocab_size} {args.kind} tokens in {seconds:.1f} s; {shown}; saved {args.out}")
    return 0


def _read_input(text: str | None) -> str:
    return sys.stdin.read() if text is None else text


def cmd_tokenizer_encode(args: argparse.Namespace) -> int:
    from ..tokenizers import load

    tok = load(args.tokenizer)
    kwargs = {"allowed_special": "all"} if args.allow_special and tok.kind in ("bpe", "wordpiece") else {}
    print(" ".join(str(i) for i in tok.encode(_read_input(args.text), **kwargs)))
    return 0


def cmd_tokenizer_decode(args: argparse.Namespace) -> int:
    from ..tokenizers import load
    from ..util.errors import TokenizerError

    tok = load(args.tokenizer)
    words = args.ids or _read_input(None).split()
    try:
        ids = [int(w) for w in words]
    except ValueError:
        raise TokenizerError(f"token ids must be integers, got {' '.join(words)[:60]!r}") from None
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0


def add_commands(sub: Any) -> None:
    tokenizer = sub.add_parser(
        "tokenizer", help="train a tokenizer (byte-level BPE or WordPiece), encode, decode"
    ).add_subparsers(dest="action", required=True)
    p = tokenizer.add_parser("train", help="learn a byte-level BPE or a WordPiece vocabulary from a corpus")
    p.add_argument("--kind", choices=["bpe", "wordpiece"], default="bpe", help="[bpe]")
    p.add_argument(
        "--data",
        nargs="+",
        default=["stdlib"],
        help="stdlib | shakespeare | names, or text files, folders, globs, JSONL, Parquet (of any size) [stdlib]",
    )
    p.add_argument("--workers", type=COUNT, default=min(4, os.cpu_count() or 1), help="counting processes [cores, 4]")
    p.add_argument("--vocab-size", type=COUNT, required=True, help="tokens in all, special tokens included")
    p.add_argument("--pattern", default="gpt2", help="bpe: split pattern: gpt2 | gpt4 | none | a regex [gpt2]")
    p.add_argument(
        "--lowercase", action=argparse.BooleanOptionalAction, default=True, help="wordpiece: lowercase [true]"
    )
    p.add_argument(
        "--special", nargs="*", default=None, help="special tokens [bpe: <|endoftext|>; wordpiece: BERT's five]"
    )
    p.add_argument("--out", required=True, help="the tokenizer JSON to write (wordpiece: or a BERT vocab.txt)")
    p.set_defaults(func=cmd_tokenizer_train)
    p = tokenizer.add_parser("encode", help="text (--text, or standard input) -> token ids")
    p.add_argument("--tokenizer", required=True, help="a tokenizer: ours, tokenizer.json, vocab.txt, or a folder")
    p.add_argument("--text")
    p.add_argument("--allow-special", action="store_true", help="encode special tokens in the text as one id")
    p.set_defaults(func=cmd_tokenizer_encode)
    p = tokenizer.add_parser("decode", help="token ids (arguments, or standard input) -> text")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("ids", nargs="*")
    p.set_defaults(func=cmd_tokenizer_decode)
