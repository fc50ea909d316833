"""The one small interface every tokenizer shares: encode, decode, vocab_size, and a JSON file; the ids a
task adds around a text (padding, begin, end); and how special tokens are found in a text."""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import regex

from ..util.atomic import atomic_write
from ..util.errors import TokenizerError
from ..util.reading import malformed


@dataclass(frozen=True)
class SpecialIds:
    """The ids a padded task puts around a text: padding, begin (BOS, the classifier's [CLS]) and end of
    sequence (EOS, [SEP]); ``vocab_size``: the model's token ids. Most tokenizers have none of their own,
    and get them appended after their vocabulary (``after``); a BERT WordPiece vocabulary has its own
    [PAD] [CLS] [SEP], and its texts end with [SEP] (``closed``)."""

    pad: int
    bos: int
    eos: int
    vocab_size: int
    closed: bool = False  # a classified text is [CLS] text [SEP] (BERT), not [CLS] text

    @classmethod
    def after(cls, base: int) -> SpecialIds:
        """ids base, base+1, base+2 after a vocabulary of ``base`` tokens: a model of base+3 ids"""
        return cls(base, base + 1, base + 2, base + 3)


class SpecialTokens:
    """Special tokens (``<|endoftext|>``, ``[CLS]``) found whole in a text before anything else, when allowed.

    allowed_special: "all" (each becomes its id), "none" (encoded as ordinary text), "none_raise" (refused
    with an error: the default, so a text cannot inject them), or a set of the tokens to allow."""

    def __init__(self, tokens: dict[str, int]) -> None:
        self.tokens = dict(tokens)
        longest_first = sorted(self.tokens, key=len, reverse=True)
        self._split = regex.compile("(" + "|".join(regex.escape(s) for s in longest_first) + ")") if tokens else None

    def allowed(self, text: str, allowed_special: str | Iterable[str]) -> set[str]:
        if allowed_special == "all":
            return set(self.tokens)
        if allowed_special in ("none", "none_raise"):
            if allowed_special == "none_raise":
                for s in self.tokens:
                    if s in text:
                        raise TokenizerError(
                            f"the text contains the special token {s!r}; pass allowed_special='all' to encode it as "
                            "one token or 'none' to encode it as plain text"
                        )
            return set()
        allowed = set(allowed_special)
        unknown = allowed - set(self.tokens)
        if unknown:
            raise TokenizerError(f"unknown special tokens {sorted(unknown)}; this tokenizer has {sorted(self.tokens)}")
        return allowed

    def split(self, text: str, allowed_special: str | Iterable[str]) -> Iterator[tuple[str, int | None]]:
        """text -> (piece, its id) for each allowed special token, (piece, None) for the text between them"""
        allowed = self.allowed(text, allowed_special)
        for part in self._split.split(text) if (self._split and allowed) else [text]:
            if part in allowed:
                yield part, self.tokens[part]
            elif part:
                yield part, None


class Tokenizer(ABC):
    kind: ClassVar[str]  # the "type" written to JSON, used by tokenizers.load()
    special_tokens: Mapping[str, int] = MappingProxyType({})  # name -> id of the special tokens it has
    prefix: tuple[int, ...] = ()  # ids a prompt starts with (Llama 3's <|begin_of_text|>); none by default

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the tokenizer (without the "type" key)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer: ...

    def specials(self) -> SpecialIds:
        """The ids a padded task (classify, seq2seq) puts around a text: appended after the vocabulary."""
        return SpecialIds.after(self.vocab_size)

    def to_huggingface(self) -> Any:
        """The same tokenizer as a ``tokenizers.Tokenizer`` (what tokenizer.json holds)."""
        raise TokenizerError(f"a {self.kind} tokenizer cannot be written as a Hugging Face tokenizer.json")

    def encode_ordinary(self, text: str) -> list[int]:
        """text -> ids, a special token's name in it encoded as ordinary text (what a corpus is tokenized with)."""
        return self.encode(text)

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def to_json(self) -> str:
        return json.dumps({"type": self.kind, **self.to_dict()}, ensure_ascii=False)

    def digest(self) -> str:
        """The SHA-256 of the tokenizer's JSON: two tokenizers that encode alike have the same digest."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: an existing file is replaced whole or not at all)."""
        atomic_write(path, self.to_json())


PROBE_IDS = 256  # the first and the last this many ids are decoded when a file is read


def checked(source: str, build: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer ``build`` makes from a parsed file, once it has decoded its first and last PROBE_IDS ids:
    a file whose values have the wrong types, or parse but do not fit together (a merge of an id that does not
    exist), is one TokenizerError line naming source, here rather than at its first use."""
    with malformed(source, TokenizerError, "it is damaged, or not a tokenizer file; save the tokenizer again"):
        tokenizer = build()
        n = tokenizer.vocab_size
        ids = sorted({*range(min(n, PROBE_IDS)), *range(max(0, n - PROBE_IDS), n)})
        tokenizer.decode(ids)
    return tokenizer
