"""Token + position embedding.   Legend: B batch, T time, C channels, V vocab, P positions (block_size),
Y token types.

    x = wte[idx] + wpe[offset : offset+T]      pos="learned": positions are looked up by the same embedding op
    x = wte[idx] + pe[offset : offset+T]       pos="sinusoidal": a fixed table, no parameters
    x = wte[idx]                               pos="rope": positions enter in attention instead
then, as BERT does:  x = x + wtt[types]  (type_vocab_size > 0; types (B,T), all 0 when not given)
                     x = ln_e(x)         (embed_norm)
backward:  dx through ln_e;  dwte = scatter-add of dx by token;  dwpe = scatter-add of dx by position (of
Σ_b dx when every row used the same positions);  dwtt = scatter-add of dx by type

``offset`` is one int (every row at the same positions) or a (B,) NumPy array of per-row offsets: a batch of
left-padded prompts, whose row b starts its real tokens at position 0 after pad_b padding slots, so its
offset is -pad_b. Padding positions (below 0) read position 0; the key mask keeps them out of attention.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .norm import Norm
from .runtime import Runtime, Specs, accumulate

POSITIONS = ("learned", "sinusoidal", "rope")


class EmbeddingCache(NamedTuple):
    tokens: Any  # the token lookup's cache
    positions: Any  # the learned-position lookup's cache, or None
    types: Any  # the token-type lookup's cache, or None
    norm: Any  # ln_e's cache, or None


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
    def __init__(self, rt: Runtime, prefix: str, V: int, cfg: Any) -> None:
        """cfg: a ModelConfig (n_embd, block_size, pos, type_vocab_size, embed_norm and the norm's options)."""
        self.rt, self.V, self.C, self.P, self.pos = rt, V, cfg.n_embd, cfg.block_size, cfg.pos
        self.Y = cfg.type_vocab_size
        self.wte, self.wpe, self.wtt = f"{prefix}.wte.weight", f"{prefix}.wpe.weight", f"{prefix}.wtt.weight"
        self.ln_e = Norm(rt, f"{prefix}.ln_e", self.C, cfg.norm, cfg.norm_eps, cfg.bias) if cfg.embed_norm else None

    def specs(self) -> Specs:
        s: Specs = {self.wte: ((self.V, self.C), "normal")}
        if self.pos == "learned":
            s[self.wpe] = ((self.P, self.C), "normal")
        if self.Y:
            s[self.wtt] = ((self.Y, self.C), "normal")
        return s | (self.ln_e.specs() if self.ln_e else {})

    def forward(self, idx: Any, offset: int | np.ndarray = 0, token_types: Any = None) -> tuple[Any, EmbeddingCache]:
        """idx (B,T) int -> x (B,T,C), positions offset .. offset+T-1 (offset: int, or (B,) per row);
        token_types (B,T) int or None (all type 0)"""
        bk, p = self.rt.bk, self.rt.params
        B, T = idx.shape
        x, c_tok = ops.embedding_forward(bk, idx, p[self.wte])  # (B,T,C)
        c_pos = c_type = c_norm = None
        if self.pos == "learned":
            positions = bk.from_numpy(position_ids(offset, T))  # (1,T) or (B,T)
            pe, c_pos = ops.embedding_forward(bk, positions, p[self.wpe])  # (1,T,C) or (B,T,C)
            x = x + pe
        elif self.pos == "sinusoidal":
            x, _ = ops.positions_forward(bk, x, position_rows(bk, self.rt.sinusoid, offset, T))
        if self.Y:
            types = bk.zeros((B, T), dtype=bk.xp.int64) if token_types is None else token_types
            te, c_type = ops.embedding_forward(bk, types, p[self.wtt])  # (B,T,C)
            x = x + te
        if self.ln_e is not None:
            x, c_norm = self.ln_e.forward(x)
        return x, EmbeddingCache(c_tok, c_pos, c_type, c_norm)

    def backward(self, dx: Any, cache: EmbeddingCache, grads: dict[str, Any]) -> None:
        """dx (B,T,C) -> gradients of wte (and wpe, wtt, ln_e), those not frozen, accumulated into grads"""
        bk = self.rt.bk
        if self.ln_e is not None:
            dx = self.ln_e.backward(dx, cache.norm, grads)
        learns = self.rt.learns
        if cache.types is not None and learns(self.wtt):
            accumulate(grads, self.wtt, ops.embedding_backward(bk, dx, cache.types))
        if cache.positions is not None and learns(self.wpe):
            B, T = dx.shape[0], dx.shape[1]
            shared = cache.positions[0].shape[0] != B * T  # every row used the same T positions: sum rows first
            dpe = bk.xp.sum(dx, axis=0, keepdims=True) if shared else dx
            accumulate(grads, self.wpe, ops.embedding_backward(bk, dpe, cache.positions))
        if learns(self.wte):
            accumulate(grads, self.wte, ops.embedding_backward(bk, dx, cache.tokens))
