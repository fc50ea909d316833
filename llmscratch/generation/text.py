"""Text in, text out: a prompt through the tokenizer, a continuation back, whole or streamed.

A continuation ends before the EOS token that stopped it and before the first stop string (matched on the
text, so a stop string split across tokens is still found, and never shown).

Streaming yields pieces of the continuation as tokens arrive; the pieces join to exactly the text the
same call without streaming returns. A piece never ends inside a UTF-8 character (byte-level BPE decodes
the first bytes of a character as U+FFFD until the token with its last byte arrives) and never shows the
start of what may become a stop string: such a tail is held back until it cannot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..util.errors import TokenizerError
from .decoders import GPTDecoder
from .options import GenerationOptions
from .search import Stopper, check_request, first_stop, search, token_steps

SAMPLE_DEFAULTS = {"temperature": 0.8, "top_k": 200}  # nanoGPT's sample.py; used unless given (and no beams)


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The tokenizer's prefix (Llama 3's <|begin_of_text|>, usually none), then the prompt's ids. An empty
    prompt is the prefix alone, or without one a newline (or token 0 when the vocabulary has none)."""
    prefix = list(tokenizer.prefix)
    if prompt or prefix:
        return prefix + tokenizer.encode(prompt)
    try:
        return tokenizer.encode("\n")
    except TokenizerError:
        return [0]


class TextStream:
    """One row's new tokens -> its text, and the next printable piece of it."""

    def __init__(self, tokenizer: Any, opt: GenerationOptions) -> None:
        self.tokenizer, self.eos, self.stop_strings = tokenizer, set(opt.eos_ids), opt.stop_strings
        self.sent = ""

    def text(self, new: list[int]) -> tuple[str, bool]:
        """-> the continuation so far, and whether it has ended (at EOS or a stop string)"""
        ended = bool(new) and new[-1] in self.eos
        text = self.tokenizer.decode(new[:-1] if ended else new)
        cut = first_stop(text, self.stop_strings)
        return (text[:cut], True) if cut >= 0 else (text, ended)

    def piece(self, new: list[int], final: bool = False) -> str:
        text, ended = self.text(new)
        if not (final or ended):
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its last byte
            held = max((k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[: len(text) - held]
        piece, self.sent = text[len(self.sent) :], text
        return piece


def stream_text(
    model: Any, tokenizer: Any, prompt: str = "", max_new_tokens: int = 200, **options: Any
) -> Iterator[str]:
    """The continuation of ``prompt`` in pieces as it is generated (beam search: one piece at the end)."""
    yield from stream_ids(model, tokenizer, prompt_ids(tokenizer, prompt), max_new_tokens, **options)


def stream_ids(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int, **options: Any) -> Iterator[str]:
    """The continuation of a prompt given as token ids, in pieces (as ``stream_text``)."""
    opt = GenerationOptions.of(**{**SAMPLE_DEFAULTS, **options} if options.get("num_beams", 1) == 1 else options)
    stream = TextStream(tokenizer, opt)
    check_request([ids], max_new_tokens)
    with model.eval_mode():
        if opt.num_beams > 1:
            decoder = GPTDecoder(model, max_new_tokens)
            yield stream.piece(search(decoder, [ids], max_new_tokens, opt, tokenizer.decode)[0], True)
            return
        new: list[int] = []
        steps = token_steps(
            GPTDecoder(model, max_new_tokens), [ids], max_new_tokens, opt, Stopper(opt, tokenizer.decode)
        )
        for rows in steps:
            new = rows[0]
            if piece := stream.piece(new):
                yield piece
        if piece := stream.piece(new, final=True):
            yield piece


def sample_text(model: Any, tokenizer: Any, prompt: str = "", max_new_tokens: int = 200, **options: Any) -> str:
    """The prompt and its continuation as text (options: GenerationOptions; sampling defaults to
    temperature 0.8, top_k 200)."""
    start = tokenizer.decode(prompt_ids(tokenizer, prompt)[len(tokenizer.prefix) :])
    return start + "".join(stream_text(model, tokenizer, prompt, max_new_tokens, **options))
