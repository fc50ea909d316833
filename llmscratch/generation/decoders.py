"""What a search needs from a model: logits for the next token of each row, one token at a time.

    logits = decoder.prefill(rows)   a fresh cache holding each row's tokens -> (B,V) float64, last position
    logits = decoder.step(tokens)    tokens (B,): one more token per row -> (B,V)
    decoder.reorder(rows)            keep rows[i] as row i (beam search; dropping finished rows)
    decoder.full                     the cache has no room for another token

GPT: the prompts are left-padded into one batch (the cache keeps each row's padding and positions).
When the context is full (block_size tokens) the window slides: ``prefill`` runs again on each row's last
block_size tokens, so a long generation sees exactly what running the model on its last block_size
tokens sees, as nanoGPT's generate does (each step past the window costs a full forward).
Encoder–decoder: the encoder runs once per source; the decoder's rows start with BOS and stop when the
decoder's context is full (a target cannot be longer than block_size).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.batches import pad_left
from ..models import GPT, Seq2Seq
from ..models.kv_cache import KVCache, check_kv_cache_fits


def last_logits(bk: Any, logits: Any) -> np.ndarray:
    """(B,T,V) on the device -> (B,V) float64 on the host"""
    return bk.to_numpy(logits[:, -1, :]).astype(np.float64)


class GPTDecoder:
    slides = True

    def __init__(self, model: GPT, max_new_tokens: int | None = None) -> None:
        """max_new_tokens: the most tokens the search will add, so the cache holds the prompt and those, not
        the whole context (a Llama 3 model's block_size is 131072: its full cache would not fit in memory)."""
        self.model, self.window, self.max_new_tokens = model, model.config.block_size, max_new_tokens
        self.cache: KVCache | None = None

    def _room(self, longest: int) -> int:
        """The cache's positions for prompts of at most ``longest`` tokens."""
        longest = min(longest, self.window)
        return self.window if self.max_new_tokens is None else min(self.window, longest + self.max_new_tokens)

    def check_rows(self, n: int, longest: int) -> None:
        """A one-line error, before anything is allocated, if n rows' cache would not fit in memory."""
        cfg = self.model.config
        check_kv_cache_fits(self.model.bk, cfg.n_layer, n, cfg.kv_heads, self._room(longest), cfg.head_dim)

    def prefill(self, rows: list[list[int]]) -> np.ndarray:
        idx, pad = pad_left([r[-self.window :] for r in rows])
        self.cache = self.model.new_kv_cache(len(rows), pad, self._room(idx.shape[1]))
        return last_logits(self.model.bk, self.model.forward(idx, kv_cache=self.cache)[0])

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return last_logits(self.model.bk, self.model.forward(np.asarray(tokens)[:, None], kv_cache=self.cache)[0])

    def reorder(self, rows: np.ndarray) -> None:
        self.cache.reorder(rows)

    @property
    def full(self) -> bool:
        return self.cache.length >= self.window


class Seq2SeqDecoder:
    """src (B,S) with src_mask: the sources; ``rows_per_source`` decoder rows follow each source (beams)."""

    slides = False

    def __init__(self, model: Seq2Seq, src: Any, src_mask: Any = None, rows_per_source: int = 1) -> None:
        self.model = model
        self.check_rows(len(src) * rows_per_source, 0)
        state = model.start(src, src_mask)
        if rows_per_source > 1:
            state = self._take(state, np.repeat(np.arange(len(src)), rows_per_source))
        self.state = state

    def check_rows(self, n: int, longest: int) -> None:
        """A one-line error, before anything is allocated, if n rows' cache would not fit in memory."""
        cfg = self.model.config
        check_kv_cache_fits(self.model.bk, cfg.decoder_layers, n, cfg.kv_heads, cfg.block_size, cfg.head_dim)

    def _take(self, state: Any, rows: np.ndarray) -> Any:
        state.kv_cache.reorder(rows)  # first: it refuses rows that would not fit
        xp, index = self.model.bk.xp, self.model.bk.from_numpy(np.asarray(rows, dtype=np.int64))
        memory = [(xp.take(k, index, axis=0), xp.take(v, index, axis=0)) for k, v in state.memory_kv]
        mask = None if state.src_mask is None else xp.take(state.src_mask, index, axis=0)
        return state._replace(memory_kv=memory, src_mask=mask)

    def prefill(self, rows: list[list[int]]) -> np.ndarray:
        return last_logits(self.model.bk, self.model.step(self.state, np.asarray(rows, dtype=np.int64)))

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return last_logits(self.model.bk, self.model.step(self.state, np.asarray(tokens)[:, None]))

    def reorder(self, rows: np.ndarray) -> None:
        self.state = self._take(self.state, rows)

    @property
    def full(self) -> bool:
        return self.state.kv_cache.length >= self.model.config.block_size
