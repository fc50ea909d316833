"""A tokenizer with the chat template's special tokens, and the template itself.

Any tokenizer (char or BPE) gains four tokens after its vocabulary, ids V .. V+3:
    <|system|>  <|user|>  <|assistant|>  <|end|>
A conversation becomes, for each message,  <|role|> content <|end|>,  and a prompt for the model's reply
ends with <|assistant|>: the model writes the reply and then <|end|>, which stops generation.

    ids = [<|system|>] + enc("Be brief.") + [<|end|>] + [<|user|>] + enc("hi") + [<|end|>] + [<|assistant|>]

The special tokens only ever come from the template: a message that contains the text "<|user|>" is
encoded as plain text, so a user cannot forge a turn. The model's embedding rows for new tokens start as
the mean of the existing rows (see ``grow_vocabulary`` in llmscratch.training.checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..util.errors import DataError
from .base import Tokenizer

ROLES = ("system", "user", "assistant")
END = "<|end|>"
CHAT_TOKENS = (*(f"<|{r}|>" for r in ROLES), END)
Message = dict[str, str]


class ChatTokenizer(Tokenizer):
    kind = "chat"

    def __init__(self, base: Tokenizer) -> None:
        self.base = base
        V = base.vocab_size
        self.special_tokens = {name: V + i for i, name in enumerate(CHAT_TOKENS)}
        self.names = {i: name for name, i in self.special_tokens.items()}

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(CHAT_TOKENS)

    def role_id(self, role: str) -> int:
        return self.special_tokens[f"<|{role}|>"]

    @property
    def end_id(self) -> int:
        return self.special_tokens[END]

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids of the base tokenizer (special tokens only come from ``encode_chat``)."""
        return self.base.encode(text)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.base.encode_ordinary(text)

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text; a special token is written as its name."""
        out, run = [], []
        for i in ids:
            if i in self.names:
                out += [self.base.decode(run), self.names[i]]
                run = []
            else:
                run.append(i)
        return "".join([*out, self.base.decode(run)])

    def to_dict(self) -> dict[str, Any]:
        return {"base": {"type": self.base.kind, **self.base.to_dict()}}

    def to_huggingface(self) -> Any:
        """The base tokenizer's tokenizers.Tokenizer with the chat tokens added as special tokens (ids V..V+3)."""
        tok = self.base.to_huggingface()
        tok.add_special_tokens(list(CHAT_TOKENS))
        return tok

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatTokenizer:
        from . import from_json_dict

        return cls(from_json_dict(d["base"]))


def with_chat_tokens(tokenizer: Tokenizer) -> ChatTokenizer:
    """The tokenizer with the chat tokens (itself if it has them already)."""
    return tokenizer if isinstance(tokenizer, ChatTokenizer) else ChatTokenizer(tokenizer)


def check_messages(messages: Any, where: str = "the conversation") -> list[Message]:
    """A list of {"role": system|user|assistant, "content": str} dicts, or a one-line DataError."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list of {{'role': ..., 'content': ...}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(
                f"{where}: message {i + 1} must be {{'role': one of {', '.join(ROLES)}, 'content': a string}}, "
                f"got {str(m)[:60]}"
            )
    return messages


def encode_chat(
    tokenizer: ChatTokenizer, messages: list[Message], add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """messages -> ids, and for each id the number of the assistant message it belongs to (its content and
    its <|end|>), or -1 (role tokens, system and user text). With ``add_generation_prompt`` the ids end with
    <|assistant|>, ready for the model to reply."""
    ids, turn, n_assistant = [], [], 0
    for m in check_messages(messages):
        body = [*tokenizer.encode(m["content"]), tokenizer.end_id]
        ids += [tokenizer.role_id(m["role"]), *body]
        owner = n_assistant if m["role"] == "assistant" else -1
        turn += [-1] + [owner] * len(body)
        n_assistant += m["role"] == "assistant"
    if add_generation_prompt:
        ids.append(tokenizer.role_id("assistant"))
        turn.append(-1)
    return ids, turn


def fit_conversation(tokenizer: ChatTokenizer, messages: list[Message], budget: int) -> tuple[list[int], list[Message]]:
    """The prompt for the next reply, at most ``budget`` tokens: the oldest turns after any system message
    are dropped, whole (a user message with the reply to it), until it fits (the latest message always
    stays; alone and still too long, its prompt keeps its last tokens, as generation does).
    -> (ids, the messages kept)"""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    while True:
        kept = system + turns
        ids, _ = encode_chat(tokenizer, kept, add_generation_prompt=True)
        if len(ids) <= budget or len(turns) <= 1:
            return ids[-budget:], kept
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] == "assistant":  # a reply without its question goes too
            turns = turns[1:]
