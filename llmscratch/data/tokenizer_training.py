"""Tokenizer training on corpora of any size: the counting pass streams, the merging is the trainer's own.

BPE and WordPiece training both start by splitting the text into pieces (BPE's regex chunks, WordPiece's
normalized words) and counting each distinct piece; the merges are learned from those counts alone. Here the
counts are gathered from files read in blocks (sources.py), in units counted by worker processes and added
up in order, so memory holds the distinct pieces and their counts, never the text. A long document is cut only
where the split would cut anyway (sources.safe_cut), and the units' counts are added in the corpus' order (a
WordPiece vocabulary lists characters in the order they are first seen), so the tokenizer is the one
``BPETokenizer.train`` / ``WordPieceTokenizer.train`` learns from the same text held in memory.

    tok = train_tokenizer("bpe", ["corpus/"], vocab_size=32768, workers=4, pattern="gpt4")
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..tokenizers import BPETokenizer, Tokenizer, WordPieceTokenizer
from ..util.errors import ConfigError
from .parallel import in_order
from .prepare import Unit, check_workers, units
from .sources import Reader, can_cut, input_files

UNIT_CHARS = 4_000_000  # characters a worker counts at a time


def splitter(kind: str, settings: dict[str, Any]) -> Callable[[str], Iterable[str]]:
    """The pre-tokenization a trainer counts: BPE's chunks (``pattern``), WordPiece's words (``lowercase``,
    ``strip_accents``)."""
    if kind == "bpe":
        return BPETokenizer(pattern=settings["pattern"])._chunks
    return WordPieceTokenizer.word_splitter(settings["lowercase"], settings.get("strip_accents"))


_split: dict[str, Callable[[str], Iterable[str]]] = {}  # in each worker: its splitter


def _start_worker(kind: str, settings: dict[str, Any]) -> None:
    _split["split"] = splitter(kind, settings)


def count_unit(unit: Unit) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text, _ in unit.pieces:
        counts.update(_split["split"](text))
    return counts


def count_pieces(
    data: list[str],
    kind: str,
    settings: dict[str, Any],
    workers: int = 1,
    separator: str | None = None,
    text_field: str = "text",
    unit_chars: int = UNIT_CHARS,
) -> Counter[str]:
    """Each distinct piece of the documents of ``data`` (see sources.py) and its count, in first-seen order."""
    pattern = BPETokenizer(pattern=settings["pattern"]).pattern_name if kind == "bpe" else None
    reader = Reader(input_files(data), separator, text_field, can_cut(kind, pattern))
    total: Counter[str] = Counter()
    for counts in in_order(count_unit, units(reader.pieces(), unit_chars), workers, (_start_worker, (kind, settings))):
        total.update(counts)  # in the corpus' order: a piece first seen earlier stays earlier
    return total


def train_tokenizer(
    kind: str, data: list[str], vocab_size: int, special_tokens: Iterable[str], workers: int = 1, **settings: Any
) -> Tokenizer:
    """A BPE (settings: pattern) or WordPiece (settings: lowercase, strip_accents) tokenizer trained on files."""
    if kind not in ("bpe", "wordpiece"):
        raise ConfigError(f"unknown tokenizer kind {kind!r}; choose bpe or wordpiece")
    counts = count_pieces(data, kind, settings, check_workers(workers))
    if kind == "bpe":
        return BPETokenizer.train_from_counts(counts, vocab_size, settings["pattern"], special_tokens)
    return WordPieceTokenizer.train_from_counts(
        counts, vocab_size, settings["lowercase"], special_tokens, settings.get("strip_accents")
    )
