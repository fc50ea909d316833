"""Tokenizers: text <-> token ids, saved as JSON.

tok = llmscratch.tokenizers.load("tokenizer.json")
ids = tok.encode("To be"); text = tok.decode(ids); tok.vocab_size
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from .base import Tokenizer
from .bpe import BPETokenizer
from .char import CharTokenizer
from .chat import ChatTokenizer, with_chat_tokens

TOKENIZERS: dict[str, type[Tokenizer]] = {t.kind: t for t in (CharTokenizer, BPETokenizer, ChatTokenizer)}


def from_json_dict(d: Any, source: str = "tokenizer JSON") -> Tokenizer:
    if not isinstance(d, dict) or d.get("type") not in TOKENIZERS:
        kind = d.get("type") if isinstance(d, dict) else None
        raise TokenizerError(f"{source} is not a llmscratch tokenizer (type {kind!r}; known: {', '.join(TOKENIZERS)})")
    try:
        return TOKENIZERS[d["type"]].from_dict({k: v for k, v in d.items() if k != "type"})
    except (KeyError, TypeError, ValueError) as e:
        raise TokenizerError(f"{source} is corrupt ({type(e).__name__}: {e}); save the tokenizer again") from None


def load(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer saved at ``path`` (char, BPE, or either with chat tokens); a one-line error if it is
    missing or corrupt."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenizerError(f"no tokenizer file at {path}") from None
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({e}); it may be truncated") from None
    return from_json_dict(d, str(path))


__all__ = ["BPETokenizer", "CharTokenizer", "ChatTokenizer", "Tokenizer", "from_json_dict", "load", "with_chat_tokens"]
