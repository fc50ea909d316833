"""Token + position embedding.   Legend: B batch, T time, C channels, V vocab, P positions (block_size).

    x = wte[idx] + wpe[offset : offset+T]      pos="learned": positions are looked up by the same embedding op
    x = wte[idx] + pe[offset : offset+T]       pos="sinusoidal": a fixed table, no parameters
    x = wte[idx]                               pos="rope": positions enter in attention instead
backward:  dwte = scatter-add of dx by token;  dwpe = scatter-add of dx by position (of Σ_b dx when every row
used the same positions)

``offset`` is one int (every row at the same positions) or a (B,) NumPy array of per-row offsets: a batch of
left-padded prompts, whose row b starts its real tokens at position 0 after pad_b padding slots, so its
offset is -pad_b. Padding positions (below 0) read position 0; the key mask keeps them out of attention.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .runtime import Runtime, Specs, accumulate

POSITIONS = ("learned", "sinusoidal", "rope")


class EmbeddingCache(NamedTuple):
    tokens: Any  # the token lookup's cache
    positions: Any  # the learned-position lookup's cache, or None


def position_ids(offset: int | np.ndarray, T: int) -> np.ndarray:
    """-> positions (1,T) for an int offset, (B,T) for per-row offsets (B,); below 0 (padding) clipped to 0"""
    if isinstance(offset, (int, np.integer)):
        return np.arange(offset, offset + T)[None, :]
    return np.maximum(np.asarray(offset)[:, None] + np.arange(T)[None, :], 0)


def position_rows(bk: Any, table: Any, offset: int | np.ndarray, T: int) -> Any:
    """table (P,X) -> its rows for positions offset .. offset+T-1: (T,X) for an int offset (a slice, no
    copy), (B,T,X) for per-row offsets (B,)"""
    if isinstance(offset, (int, np.integer)):
        return table[offset : offset + T, ...]
    pos = position_ids(offset, T)  # (B,T)
    rows = bk.xp.take(table, bk.from_numpy(pos.reshape(-1)), axis=0)
    return bk.xp.reshape(rows, (*pos.shape, table.shape[-1]))


class Embedding:
    def __init__(self, rt: Runtime, prefix: str, V: int, C: int, P: int, pos: str) -> None:
        self.rt, self.V, self.C, self.P, self.pos = rt, V, C, P, pos
        self.wte, self.wpe = f"{prefix}.wte.weight", f"{prefix}.wpe.weight"
        self._sinusoid = ops.sinusoidal_table(rt.bk, P, C) if pos == "sinusoidal" else None

    def specs(self) -> Specs:
        s: Specs = {self.wte: ((self.V, self.C), "normal")}
        if self.pos == "learned":
            s[self.wpe] = ((self.P, self.C), "normal")
        return s

    def forward(self, idx: Any, offset: int | np.ndarray = 0) -> tuple[Any, EmbeddingCache]:
        """idx (B,T) int -> x (B,T,C), positions offset .. offset+T-1 (offset: int, or (B,) per row)"""
        bk, p = self.rt.bk, self.rt.params
        T = idx.shape[1]
        x, c_tok = ops.embedding_forward(bk, idx, p[self.wte])  # (B,T,C)
        c_pos = None
        if self.pos == "learned":
            positions = bk.from_numpy(position_ids(offset, T))  # (1,T) or (B,T)
            pe, c_pos = ops.embedding_forward(bk, positions, p[self.wpe])  # (1,T,C) or (B,T,C)
            x = x + pe
        elif self.pos == "sinusoidal":
            x, _ = ops.positions_forward(bk, x, position_rows(bk, self._sinusoid, offset, T))
        return x, EmbeddingCache(c_tok, c_pos)

    def backward(self, dx: Any, cache: EmbeddingCache, grads: dict[str, Any]) -> None:
        """dx (B,T,C) -> gradients of wte (and wpe), accumulated into grads"""
        bk = self.rt.bk
        if cache.positions is not None:
            B, T = dx.shape[0], dx.shape[1]
            shared = cache.positions[0].shape[0] != B * T  # every row used the same T positions: sum rows first
            dpe = bk.xp.sum(dx, axis=0, keepdims=True) if shared else dx
            accumulate(grads, self.wpe, ops.embedding_backward(bk, dpe, cache.positions))
        accumulate(grads, self.wte, ops.embedding_backward(bk, dx, cache.tokens))
