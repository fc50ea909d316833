"""A stack: token + position embedding, dropout, N blocks, an optional final norm. GPT is one causal stack;
the encoder one bidirectional stack; the encoder–decoder a bidirectional one and a causal one whose blocks
also cross-attend to the encoder's output.   Legend: B batch, T time, S source length, C channels.

    x = drop(embed(idx));   x = block_i(x, ...) for each block;   x = ln_f(x)
backward:  the same in reverse; the decoder's dmemory is the sum over its blocks (each read the memory).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .block import Block
from .embedding import Embedding
from .norm import Norm
from .runtime import Runtime, Specs


class StackCache(NamedTuple):
    embed: Any
    dropout: Any
    blocks: list[Any]
    ln_f: Any


class Stack:
    def __init__(
        self,
        rt: Runtime,
        prefix: str,
        cfg: Any,
        *,
        n_layer: int,
        vocab_size: int,
        causal: bool,
        cross: bool = False,
    ) -> None:
        """cfg: a ModelConfig (sizes and options)."""
        self.rt = rt
        self.embed = Embedding(rt, prefix, vocab_size, cfg)
        self.blocks = [
            Block(rt, f"{prefix}.h.{i}", cfg, causal=causal, cross=cross, layer_index=i) for i in range(n_layer)
        ]
        has_ln_f = cfg.has_final_norm
        self.ln_f = Norm(rt, f"{prefix}.ln_f", cfg.n_embd, cfg.norm, cfg.norm_eps, cfg.bias) if has_ln_f else None

    def specs(self) -> Specs:
        parts = [self.embed, *self.blocks, *([self.ln_f] if self.ln_f else [])]
        return {k: v for part in parts for k, v in part.specs().items()}

    def forward(
        self,
        idx: Any,
        rng: Any = None,
        *,
        key_mask: Any = None,
        offset: int | np.ndarray = 0,
        kv_cache: Any = None,
        memory: Any = None,
        memory_mask: Any = None,
        memory_kv: list[tuple[Any, Any]] | None = None,
        token_types: Any = None,
    ) -> tuple[Any, StackCache]:
        """idx (B,T) int -> x (B,T,C).  key_mask (B,T) (or (B,offset+T) with a kv_cache) masks padding keys;
        memory (B,S,C) or its per-block keys/values (``memory_kv``) and memory_mask (B,S) feed cross-attention;
        token_types (B,T) int: the segment of each token (with type_vocab_size)."""
        x, c_embed = self.embed.forward(idx, offset, token_types)
        x, c_drop = ops.dropout_forward(self.rt.bk, x, self.rt.dropout_p, rng)
        c_blocks = []
        for i, block in enumerate(self.blocks):
            x, c = block.forward(
                x,
                rng,
                key_mask=key_mask,
                offset=offset,
                kv_cache=kv_cache,
                memory=memory,
                memory_mask=memory_mask,
                memory_kv=None if memory_kv is None else memory_kv[i],
            )
            c_blocks.append(c)
        if kv_cache is not None:
            kv_cache.advance(idx.shape[1])
        c_lnf = None
        if self.ln_f is not None:
            x, c_lnf = self.ln_f.forward(x)
        return x, StackCache(c_embed, c_drop, c_blocks, c_lnf)

    def backward(self, dx: Any, cache: StackCache, grads: dict[str, Any]) -> Any:
        """dx (B,T,C) -> dmemory (B,S,C), summed over the blocks (None without cross-attention)"""
        if self.ln_f is not None:
            dx = self.ln_f.backward(dx, cache.ln_f, grads)
        dmemory = None
        for block, c in zip(reversed(self.blocks), reversed(cache.blocks), strict=True):
            dx, dmem = block.backward(dx, c, grads)
            if dmem is not None:
                dmemory = dmem if dmemory is None else dmemory + dmem
        dx = ops.dropout_backward(self.rt.bk, dx, cache.dropout)
        self.embed.backward(dx, cache.embed, grads)
        return dmemory

    def memory_kv(self, memory: Any) -> list[tuple[Any, Any]]:
        """memory (B,S,C) -> each block's cross-attention keys and values, computed once per input."""
        return [block.cross_attn.memory_kv(memory)[:2] for block in self.blocks if block.cross_attn is not None]
