"""Tokenizer benchmarks: BPE and WordPiece training time, encoding speed and compression, ours against
Hugging Face's Rust trainers (and BPE's textbook trainer), on the same text, in the same run."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from ...data.corpora import load_text
from ...tokenizers.bpe import PATTERNS, BPETokenizer
from ...tokenizers.bpe_textbook import textbook_train
from ...tokenizers.wordpiece import BERT_SPECIALS, WordPieceTokenizer
from ..args import number_list
from .common import add_output_args, publish
from .report import markdown_table


def huggingface_bpe(vocab_size: int, pattern: str = "gpt2") -> tuple[Any, Any]:
    """HF tokenizers' BPE and its trainer set up like ours: the same split, byte-level, <|endoftext|> special
    -> (tokenizer, trainer), for ``tokenizer.train(files, trainer)`` or ``train_from_iterator``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    if PATTERNS[pattern]:
        steps.insert(0, pre_tokenizers.Split(Regex(PATTERNS[pattern]), behavior="isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return tok, trainer


def train_huggingface(text: str, vocab_size: int, pattern: str = "gpt2") -> Any:
    """huggingface_bpe trained on text."""
    tok, trainer = huggingface_bpe(vocab_size, pattern)
    tok.train_from_iterator([text], trainer)
    return tok


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_tokenizers(
    text: str,
    vocab_sizes: tuple[int, ...] = (512, 1024, 4096),
    pattern: str = "gpt2",
    textbook: Callable[[str, int, str], Any] | None = None,
) -> list[dict[str, Any]]:
    """One record per (trainer, vocab size): training seconds, encode MB/s, bytes per token on the text."""
    records = []
    n_bytes = len(text.encode())

    def record(name: str, V: int, train_s: float, encode_s: float, n_tokens: int) -> dict[str, Any]:
        return {
            "tokenizer": name,
            "vocab_size": V,
            "train_s": train_s,
            "encode_mb_s": n_bytes / encode_s / 1e6,
            "bytes_per_token": n_bytes / n_tokens,
            "pattern": pattern,
            "text_bytes": n_bytes,
        }

    for V in vocab_sizes:
        ours, seconds = _timed(lambda V=V: BPETokenizer.train(text, V, pattern))
        ours._encode_chunk.cache_clear()  # the chunk cache is part of encoding: time it from cold
        ids, enc_s = _timed(lambda ours=ours: ours.encode(text, allowed_special="none"))
        records.append(record("llmscratch", V, seconds, enc_s, len(ids)))
        hf, seconds = _timed(lambda V=V: train_huggingface(text, V, pattern))
        hf_ids, enc_s = _timed(lambda hf=hf: hf.encode(text).ids)
        records.append(record("huggingface tokenizers (Rust)", V, seconds, enc_s, len(hf_ids)))
    if textbook is not None:
        V = min(vocab_sizes)
        _, seconds = _timed(lambda: textbook(text, V, pattern))
        records.append(
            {
                "tokenizer": "textbook O(N·V) trainer",
                "vocab_size": V,
                "train_s": seconds,
                "encode_mb_s": None,
                "bytes_per_token": None,
                "pattern": pattern,
                "text_bytes": n_bytes,
            }
        )
    for r in records:
        hf = next(
            (h for h in records if h["tokenizer"].startswith("huggingface") and h["vocab_size"] == r["vocab_size"]),
            None,
        )
        r["bytes_per_token_vs_hf"] = (
            (r["bytes_per_token"] / hf["bytes_per_token"]) if hf and r["bytes_per_token"] else None
        )
    return records


def train_huggingface_wordpiece(text: str, vocab_size: int) -> Any:
    """HF tokenizers' WordPiece trainer set up as BERT's uncased tokenizer, with BERT's special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS), show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok


def bench_wordpiece(text: str, vocab_sizes: tuple[int, ...] = (8000,)) -> list[dict[str, Any]]:
    """One record per (trainer, vocab size): training seconds, encode MB/s, characters per token, and the
    characters per token as a fraction of Hugging Face's."""
    records = []
    n_chars, n_bytes = len(text), len(text.encode())
    for V in vocab_sizes:
        ours, train_s = _timed(lambda V=V: WordPieceTokenizer.train(text, V))
        ids, enc_s = _timed(lambda ours=ours: ours.encode(text, allowed_special="none"))
        hf, hf_train_s = _timed(lambda V=V: train_huggingface_wordpiece(text, V))
        hf_ids, hf_enc_s = _timed(lambda hf=hf: hf.encode(text, add_special_tokens=False).ids)
        for name, seconds, n_tokens, encode_s, size in (
            ("llmscratch", train_s, len(ids), enc_s, ours.vocab_size),
            ("huggingface tokenizers (Rust)", hf_train_s, len(hf_ids), hf_enc_s, hf.get_vocab_size()),
        ):
            records.append(
                {
                    "tokenizer": name,
                    "vocab_size": size,
                    "train_s": seconds,
                    "encode_mb_s": n_bytes / encode_s / 1e6,
                    "chars_per_token": n_chars / n_tokens,
                    "chars_per_token_vs_hf": len(hf_ids) / n_tokens,
                    "text_bytes": n_bytes,
                }
            )
    return records


BPE_COLUMNS = [
    ("tokenizer", "tokenizer", ""),
    ("vocab", "vocab_size", ""),
    ("train s", "train_s", ".2f"),
    ("encode MB/s", "encode_mb_s", ".2f"),
    ("bytes/token", "bytes_per_token", ".3f"),
    ("bytes/token ÷ HF", "bytes_per_token_vs_hf", ".4f"),
]
WORDPIECE_COLUMNS = [
    ("tokenizer", "tokenizer", ""),
    ("vocab", "vocab_size", ""),
    ("train s", "train_s", ".2f"),
    ("encode MB/s", "encode_mb_s", ".2f"),
    ("chars/token", "chars_per_token", ".3f"),
    ("chars/token ÷ HF", "chars_per_token_vs_hf", ".4f"),
]


def cmd(args: argparse.Namespace) -> int:
    _, text = load_text(args.data)
    records = bench_tokenizers(text, tuple(args.vocab_sizes), args.pattern, textbook_train if args.textbook else None)
    sections = {f"BPE on {args.data} ({len(text.encode()):,} bytes)": (records, markdown_table(records, BPE_COLUMNS))}
    if args.wordpiece_sizes:
        wp = bench_wordpiece(text, tuple(args.wordpiece_sizes))
        sections[f"WordPiece (BERT uncased) on {args.data}"] = (wp, markdown_table(wp, WORDPIECE_COLUMNS))
    return publish(args, sections)


def add_parser(bench: Any) -> None:
    p = bench.add_parser("tokenizer", help="BPE and WordPiece training time, encode MB/s, compression vs HF")
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--vocab-sizes", type=number_list(), default=[512, 1024, 4096])
    p.add_argument(
        "--wordpiece-sizes",
        type=lambda text: number_list()(text) if text else [],
        default=[8000],
        help="WordPiece vocabularies to train ('' for none) [8000]",
    )
    p.add_argument("--pattern", default="gpt2")
    p.add_argument("--textbook", action="store_true", help="also time the textbook trainer (smallest size only)")
    add_output_args(p, "tokenizer")
    p.set_defaults(func=cmd)
