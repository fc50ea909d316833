"""A transformer block: self-attention, optional cross-attention, MLP, each a residual sublayer.

pre-LN  (norm_first=True, GPT-2):             post-LN (norm_first=False, "Add & Norm", BERT, the 2017 paper):
    x = x + drop(attn(ln_1(x)))                   x = ln_1(x + drop(attn(x)))
    x = x + drop(cross(ln_cross(x), memory))      x = ln_cross(x + drop(cross(x, memory)))
    x = x + drop(mlp(ln_2(x)))                    x = ln_2(x + drop(mlp(x)))
The encoder's block is bidirectional with a key-padding mask; GPT's and the decoder's are causal; only the
decoder's has cross-attention. ``backward`` walks the sublayers in reverse.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .attention import Attention
from .mlp import MLP
from .norm import Norm
from .runtime import Runtime, Specs


class SublayerCache(NamedTuple):
    norm: Any  # the norm's cache
    layer: Any  # the attention's or MLP's cache
    dropout: Any  # the dropout mask, or None


class BlockCache(NamedTuple):
    attn: SublayerCache
    cross: SublayerCache | None
    mlp: SublayerCache


class Block:
    def __init__(
        self,
        rt: Runtime,
        prefix: str,
        cfg: Any,
        *,
        causal: bool,
        cross: bool = False,
        layer_index: int = 0,
    ) -> None:
        """cfg: a ModelConfig (n_embd, n_head, kv_heads, hidden, mlp, norm, norm_eps, bias, has_mlp_bias,
        norm_first)."""
        self.rt, self.norm_first = rt, cfg.norm_first
        C, H, Hkv = cfg.n_embd, cfg.n_head, cfg.kv_heads

        def norm(name: str) -> Norm:
            return Norm(rt, f"{prefix}.{name}", C, cfg.norm, cfg.norm_eps, cfg.bias)

        self.ln_1 = norm("ln_1")
        rope = cfg.pos == "rope"
        self.attn = Attention(rt, f"{prefix}.attn", C, H, Hkv, cfg.bias, causal, rope=rope, layer_index=layer_index)
        self.ln_cross = norm("ln_cross") if cross else None
        self.cross_attn = (
            Attention(rt, f"{prefix}.cross_attn", C, H, Hkv, cfg.bias, False, cross=True) if cross else None
        )
        self.ln_2 = norm("ln_2")
        self.mlp = MLP(rt, f"{prefix}.mlp", C, cfg.hidden, cfg.mlp, cfg.has_mlp_bias)

    def specs(self) -> Specs:
        parts = [self.ln_1, self.attn, self.ln_cross, self.cross_attn, self.ln_2, self.mlp]
        return {k: v for part in parts if part is not None for k, v in part.specs().items()}

    def _sublayer(self, x: Any, norm: Norm, run: Any, rng: Any) -> tuple[Any, SublayerCache]:
        """x + drop(run(norm(x))) (pre-LN) or norm(x + drop(run(x))) (post-LN)"""
        bk, p = self.rt.bk, self.rt.dropout_p
        if self.norm_first:
            h, c_norm = norm.forward(x)
            h, c_layer = run(h)
            h, c_drop = ops.dropout_forward(bk, h, p, rng)
            return x + h, SublayerCache(c_norm, c_layer, c_drop)
        h, c_layer = run(x)
        h, c_drop = ops.dropout_forward(bk, h, p, rng)
        out, c_norm = norm.forward(x + h)
        return out, SublayerCache(c_norm, c_layer, c_drop)

    def _sublayer_backward(
        self, dout: Any, cache: SublayerCache, norm: Norm, back: Any, grads: dict
    ) -> tuple[Any, Any]:
        """dout -> (dx, what else ``back`` returned): through the residual and the sublayer, whose backward
        ``back`` maps the gradient of its output to (the gradient of its input, dmemory or None)"""
        bk = self.rt.bk
        if self.norm_first:
            dh, extra = back(ops.dropout_backward(bk, dout, cache.dropout))
            return dout + norm.backward(dh, cache.norm, grads), extra
        dsum = norm.backward(dout, cache.norm, grads)
        dh, extra = back(ops.dropout_backward(bk, dsum, cache.dropout))
        return dsum + dh, extra

    def forward(
        self,
        x: Any,
        rng: Any = None,
        *,
        key_mask: Any = None,
        offset: int | np.ndarray = 0,
        kv_cache: Any = None,
        memory: Any = None,
        memory_mask: Any = None,
        memory_kv: tuple[Any, Any] | None = None,
    ) -> tuple[Any, BlockCache]:
        """x (B,T,C) -> (B,T,C); memory (B,S,C) (or its precomputed keys/values) for cross-attention"""

        def attend(h: Any) -> tuple[Any, Any]:
            return self.attn.forward(h, key_mask, offset=offset, kv_cache=kv_cache, rng=rng)

        x, c_attn = self._sublayer(x, self.ln_1, attend, rng)
        c_cross = None
        if self.cross_attn is not None:
            cross_attn = self.cross_attn

            def cross(h: Any) -> tuple[Any, Any]:
                return cross_attn.forward(h, memory_mask, memory=memory, memory_kv=memory_kv, rng=rng)

            x, c_cross = self._sublayer(x, self.ln_cross, cross, rng)
        x, c_mlp = self._sublayer(x, self.ln_2, lambda h: self.mlp.forward(h, rng), rng)
        return x, BlockCache(c_attn, c_cross, c_mlp)

    def backward(self, dx: Any, cache: BlockCache, grads: dict[str, Any]) -> tuple[Any, Any]:
        """dx (B,T,C) -> dx (B,T,C), dmemory (B,S,C) (None without cross-attention)"""
        dx, _ = self._sublayer_backward(
            dx, cache.mlp, self.ln_2, lambda d: (self.mlp.backward(d, cache.mlp.layer, grads), None), grads
        )
        dmemory = None
        if self.cross_attn is not None and cache.cross is not None:
            cross_attn, c_cross = self.cross_attn, cache.cross
            dx, dmemory = self._sublayer_backward(
                dx, c_cross, self.ln_cross, lambda d: cross_attn.backward(d, c_cross.layer, grads), grads
            )
        dx, _ = self._sublayer_backward(
            dx, cache.attn, self.ln_1, lambda d: self.attn.backward(d, cache.attn.layer, grads), grads
        )
        return dx, dmemory
