"""The one small interface every tokenizer shares: encode, decode, vocab_size, and a JSON file."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

from ..atomic import atomic_write


class Tokenizer(ABC):
    kind: ClassVar[str]  # the "type" written to JSON, used by tokenizers.load()

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

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def to_json(self) -> str:
        return json.dumps({"type": self.kind, **self.to_dict()}, ensure_ascii=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: an existing file is replaced whole or not at all)."""
        atomic_write(path, self.to_json())
