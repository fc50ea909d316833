"""Tokenizers: text <-> token ids, saved as JSON.

tok = llmscratch.tokenizers.load("tokenizer.json")     # ours, or a Hugging Face tokenizer.json, vocab.txt, or
ids = tok.encode("To be"); text = tok.decode(ids)      # a directory with one (GPT-2's vocab.json + merges.txt)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..util.errors import TokenizerError
from ..util.reading import read_json
from .base import Tokenizer, checked
from .bpe import BPETokenizer
from .char import CharTokenizer
from .chat import ChatTokenizer, with_chat_tokens
from .hf import find_tokenizer, from_tokenizer_json, load_vocab_txt
from .wordpiece import WordPieceTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    t.kind: t for t in (CharTokenizer, BPETokenizer, WordPieceTokenizer, ChatTokenizer)
}


def from_json_dict(d: Any, source: str = "tokenizer JSON") -> Tokenizer:
    """A tokenizer from our JSON (``{"type": kind, ...}``), checked as ``checked`` says."""
    kind = d.get("type") if isinstance(d, dict) else None
    if not isinstance(kind, str) or kind not in TOKENIZERS:
        raise TokenizerError(f"{source} is not a llmscratch tokenizer (type {kind!r}; known: {', '.join(TOKENIZERS)})")
    return checked(source, lambda: TOKENIZERS[kind].from_dict({k: v for k, v in d.items() if k != "type"}))


def load(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer saved at ``path``: our JSON (char, BPE, WordPiece, any of them with chat tokens), a Hugging
    Face tokenizer.json or BERT vocab.txt, or a directory holding one of those or GPT-2's files; a one-line
    error if it is missing, corrupt or of a kind llmscratch does not read."""
    path = Path(path)
    return checked(str(path), lambda: _load(path))


def _load(path: Path) -> Tokenizer:
    if path.is_dir():
        found = find_tokenizer(path)
        if found is None:
            raise TokenizerError(
                f"{path} holds no tokenizer (tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, "
                "or vocab.txt)"
            )
        return found
    if path.suffix == ".txt" and path.is_file():
        return load_vocab_txt(path)
    try:
        d = read_json(path, TokenizerError)
    except FileNotFoundError:
        raise TokenizerError(f"no tokenizer file at {path}") from None
    if isinstance(d, dict) and "model" in d and "type" not in d:  # a Hugging Face tokenizer.json
        return from_tokenizer_json(d, str(path))
    return from_json_dict(d, str(path))


__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "ChatTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "find_tokenizer",
    "from_json_dict",
    "load",
    "with_chat_tokens",
]
