"""Token + position embedding.   Legend: B batch, T time, C channels, V vocab, P positions (block_size).

    x = wte[idx] + wpe[offset : offset+T]      pos="learned": positions are looked up by the same embedding op
    x = wte[idx] + pe[offset : offset+T]       pos="sinusoidal": a fixed table, no parameters
    x = wte[idx]                               pos="rope": positions enter in attention instead
backward:  dwte = scatter-add of dx by token;  dwpe = scatter-add of Σ_b dx by position (every row used 0..T-1)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from .runtime import Runtime, Specs, accumulate

POSITIONS = ("learned", "sinusoidal", "rope")


class EmbeddingCache(NamedTuple):
    tokens: Any  # the token lookup's cache
    positions: Any  # the learned-position lookup's cache, or None


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

    def forward(self, idx: Any, offset: int = 0) -> tuple[Any, EmbeddingCache]:
        """idx (B,T) int -> x (B,T,C), positions offset .. offset+T-1"""
        bk, p = self.rt.bk, self.rt.params
        T = idx.shape[1]
        x, c_tok = ops.embedding_forward(bk, idx, p[self.wte])  # (B,T,C)
        c_pos = None
        if self.pos == "learned":
            positions = bk.xp.arange(offset, offset + T, dtype=bk.index_dtype, device=bk.device)[None, :]  # (1,T)
            pe, c_pos = ops.embedding_forward(bk, positions, p[self.wpe])  # (1,T,C)
            x = x + pe
        elif self.pos == "sinusoidal":
            x, _ = ops.positions_forward(bk, x, self._sinusoid[offset : offset + T, ...])
        return x, EmbeddingCache(c_tok, c_pos)

    def backward(self, dx: Any, cache: EmbeddingCache, grads: dict[str, Any]) -> None:
        """dx (B,T,C) -> gradients of wte (and wpe), accumulated into grads"""
        bk = self.rt.bk
        if cache.positions is not None:
            accumulate(
                grads, self.wpe, ops.embedding_backward(bk, bk.xp.sum(dx, axis=0, keepdims=True), cache.positions)
            )
        accumulate(grads, self.wte, ops.embedding_backward(bk, dx, cache.tokens))
