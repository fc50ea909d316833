"""Prompts and replies as token ids, for the tasks that score or sample whole replies (dpo, rl).

A prompt is a plain text or a list of chat messages. After a plain prompt the reply's tokens follow as they
are; after a chat prompt comes the chat template's <|assistant|> and the reply, closed by <|end|> (so the model
learns to stop). The reply's tokens are the targets (what its log-probability sums over); the prompt's are not.
"""

from __future__ import annotations

from typing import Any

from ..data.batches import IGNORE
from ..tokenizers import Tokenizer
from ..tokenizers.chat import ChatTokenizer, encode_chat, with_chat_tokens
from ..util.errors import DataError

Example = tuple[list[int], list[int]]  # ids, and the target of each position but the last (IGNORE: none)


def tokenizer_for(tokenizer: Tokenizer, prompts: list[Any]) -> Tokenizer:
    """The tokenizer, with the chat tokens added when any prompt is a conversation."""
    return with_chat_tokens(tokenizer) if any(isinstance(p, list) for p in prompts) else tokenizer


def prompt_ids(tokenizer: Tokenizer, prompt: Any) -> list[int]:
    """The ids a reply to ``prompt`` follows."""
    if isinstance(prompt, list):
        if not isinstance(tokenizer, ChatTokenizer):
            raise DataError(
                "the prompts are conversations (lists of messages) and this model has no chat tokens; use a model "
                "fine-tuned to chat (--task sft), or write the prompts as plain text"
            )
        return encode_chat(tokenizer, prompt, add_generation_prompt=True)[0]
    return tokenizer.encode(prompt)


def reply_ids(tokenizer: Tokenizer, prompt: Any, reply: str) -> list[int]:
    """The reply's ids (with <|end|> after a chat prompt)."""
    ids = tokenizer.encode(reply)
    return [*ids, tokenizer.end_id] if isinstance(prompt, list) else ids


def stop_id(tokenizer: Tokenizer, prompt: Any) -> int | None:
    """The token that ends a sampled reply: <|end|> after a chat prompt, else a newline when the tokenizer has
    it as one token (None: the reply runs to its length limit)."""
    if isinstance(prompt, list):
        return tokenizer.end_id
    newline = tokenizer.encode("\n")
    return newline[0] if len(newline) == 1 else None


def reply_text(tokenizer: Tokenizer, prompt: Any, ids: list[int]) -> str:
    """A sampled reply's text: its ids up to (without) its stop token (stop_id)."""
    stop = stop_id(tokenizer, prompt)
    if stop in ids:
        ids = ids[: ids.index(stop)]
    return tokenizer.decode(ids)


def with_reply(tokenizer: Tokenizer, prompt: Any, reply: list[int], block_size: int, where: str) -> Example:
    """prompt + reply ids -> (ids, targets): the reply's tokens are the targets; one line if it is too long."""
    start = prompt_ids(tokenizer, prompt)
    ids = start + reply
    if len(ids) - 1 > block_size:
        raise DataError(
            f"{where}: the prompt and reply are {len(ids)} tokens, more than the context (block_size={block_size}) "
            "+ 1; shorten them or train with a larger --block-size"
        )
    return ids, [IGNORE] * (len(start) - 1) + reply
