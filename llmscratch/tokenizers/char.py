"""Character tokenizer: one token per distinct character of the training text, ids in sorted order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..util.errors import TokenizerError
from .base import Tokenizer


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars):
            raise TokenizerError("a character tokenizer needs a non-empty list of single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        if not text:
            raise TokenizerError("cannot build a character vocabulary from empty text")
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            pos = next(i for i, c in enumerate(text) if c not in self.stoi)
            raise TokenizerError(
                f"character {e.args[0]!r} (at position {pos}) is not in the {self.vocab_size}-character vocabulary "
                "this model was trained on; remove it from the text or train on a corpus that has it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token id {bad[0]} is out of range for a vocabulary of {self.vocab_size}")
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["chars"])

    def to_huggingface(self) -> Any:
        """A tokenizers.Tokenizer: a BPE model with these characters and no merges, and no pre-tokenizer,
        splits a text into its characters; the Fuse decoder joins them back."""
        from tokenizers import Tokenizer, decoders, models

        tok = Tokenizer(models.BPE(vocab=dict(self.stoi), merges=[]))
        tok.decoder = decoders.Fuse()
        return tok
