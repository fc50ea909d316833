"""Multi-head attention as a layer: causal or bidirectional self-attention, and cross-attention.

Legend: B batch, T queries, S keys, C channels, H query heads, Hkv key/value heads, D head dim.

self-attention:   [q | k | v] = x @ c_attn        (B,T,(H+2Hkv)·D), GPT-2's fused projection
cross-attention:  q = x @ c_q;  [k | v] = memory @ c_kv     queries from the decoder, keys/values from the encoder
then              y = softmax(s·q kᵀ + mask) v  (the model's attention kernel);   out = y @ c_proj
RoPE (pos="rope") rotates q and k of self-attention by their positions. ``key_mask`` (B,S) is False on
padding keys. The cross-attention backward also returns the gradient of ``memory``: the model sums it over
every decoder layer that read it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from .embedding import position_rows
from .linear import Linear
from .runtime import Runtime, Specs


class AttentionCache(NamedTuple):
    q_proj: Any  # c_attn's cache (self) or c_q's (cross)
    kv_proj: Any  # c_kv's cache (cross, when it projected the memory itself), else None
    rope: Any  # RoPE's cache, or None
    kernel: Any  # the attention kernel's cache
    proj: Any  # c_proj's cache


def split_heads(bk: Any, a: Any, counts: tuple[int, ...], D: int) -> list[Any]:
    """a (B,T,Σcounts·D) -> one (B,n,T,D) view per count (no copy)"""
    xp = bk.xp
    B, T, _ = a.shape
    heads = xp.permute_dims(xp.reshape(a, (B, T, sum(counts), D)), (0, 2, 1, 3))
    out, start = [], 0
    for n in counts:
        out.append(heads[:, start : start + n, ...])
        start += n
    return out


def merge_heads(bk: Any, parts: list[Any]) -> Any:
    """(B,n,T,D) arrays -> (B,T,Σn·D), heads side by side (one copy)"""
    xp = bk.xp
    B, _, T, D = parts[0].shape
    heads_last = [xp.permute_dims(g, (0, 2, 1, 3)) for g in parts]  # views, (B,T,n,D)
    joined = heads_last[0] if len(parts) == 1 else xp.concat(heads_last, axis=2)
    return xp.reshape(joined, (B, T, sum(g.shape[1] for g in parts) * D))


class Attention:
    """``cross=False``: self-attention over x (causal or not); ``cross=True``: x attends to ``memory``."""

    def __init__(
        self,
        rt: Runtime,
        name: str,
        C: int,
        H: int,
        Hkv: int,
        bias: bool,
        causal: bool,
        cross: bool = False,
        rope: bool = False,
        layer_index: int = 0,
    ) -> None:
        """rope: rotate q and k by their positions (self-attention only), with the tables in ``rt.rope``."""
        self.rt, self.name, self.H, self.Hkv, self.D = rt, name, H, Hkv, C // H
        self.causal, self.cross, self.rope, self.layer_index = causal, cross, rope and not cross, layer_index
        D = self.D
        q, k, v = ("q", H * D), ("k", Hkv * D), ("v", Hkv * D)  # the LoRA targets (parts) of the projections
        if cross:
            self.c_q = Linear(rt, f"{name}.c_q", C, H * D, bias, parts=(q,))
            self.c_kv = Linear(rt, f"{name}.c_kv", C, 2 * Hkv * D, bias, parts=(k, v))
        else:
            self.c_attn = Linear(rt, f"{name}.c_attn", C, (H + 2 * Hkv) * D, bias, parts=(q, k, v))
        self.c_proj = Linear(rt, f"{name}.c_proj", C, C, bias, "residual", parts=(("o", C),))

    def specs(self) -> Specs:
        inputs = (self.c_q, self.c_kv) if self.cross else (self.c_attn,)
        return {k: v for layer in (*inputs, self.c_proj) for k, v in layer.specs().items()}

    def memory_kv(self, memory: Any, rng: Any = None) -> tuple[Any, Any, Any]:
        """Cross-attention: memory (B,S,C) -> k (B,Hkv,S,D), v (B,Hkv,S,D) and c_kv's cache; computed once
        per input when decoding."""
        kv, c_kv = self.c_kv.forward(memory, rng)
        k, v = split_heads(self.rt.bk, kv, (self.Hkv, self.Hkv), self.D)
        return k, v, c_kv

    def forward(
        self,
        x: Any,
        key_mask: Any = None,
        *,
        offset: int | np.ndarray = 0,
        kv_cache: Any = None,
        memory: Any = None,
        memory_kv: tuple[Any, Any] | None = None,
        rng: Any = None,
    ) -> tuple[Any, AttentionCache]:
        """x (B,T,C) -> out (B,T,C).  Self: key_mask (B,T) (or (B,slots+T) with a kv_cache); offset: the
        position of x's first token, an int or (B,) per row (left-padded batches).
        Cross: memory (B,S,C) or its precomputed ``memory_kv``, key_mask (B,S). rng: LoRA dropout's generator."""
        rt, bk = self.rt, self.rt.bk
        H, Hkv, D = self.H, self.Hkv, self.D
        c_kv = c_rope = None
        if self.cross:
            q_all, c_q = self.c_q.forward(x, rng)
            (q,) = split_heads(bk, q_all, (H,), D)
            if memory_kv is None:
                k, v, c_kv = self.memory_kv(memory, rng)
            else:
                k, v = memory_kv
        else:
            qkv, c_q = self.c_attn.forward(x, rng)  # (B,T,(H+2Hkv)·D)
            q, k, v = split_heads(bk, qkv, (H, Hkv, Hkv), D)
            if self.rope:
                B, T = x.shape[0], x.shape[1]
                cos, sin = (position_rows(bk, table, offset, T) for table in rt.rope)  # (T,D) or (B,T,D)
                if cos.ndim == 3:
                    cos, sin = (bk.xp.reshape(t, (B, 1, T, D)) for t in (cos, sin))
                q, c_rope = ops.rope_forward(bk, q, cos, sin)
                k, _ = ops.rope_forward(bk, k, cos, sin)  # same tables: one cache serves both
            if kv_cache is not None:
                k, v = kv_cache.append(self.layer_index, k, v)
        causal = self.causal and not self.cross
        if rt.attention_maps is not None:  # the reference kernel, whose cache holds the probabilities
            y, c_kernel = ops.attention_forward(bk, q, k, v, causal=causal, key_mask=key_mask)
            B, T, S = q.shape[0], q.shape[2], k.shape[2]
            rt.attention_maps[self.name] = bk.xp.reshape(c_kernel.att, (B, H, T, S))
        else:
            y, c_kernel = rt.kernel.forward(bk, q, k, v, causal=causal, key_mask=key_mask)  # (B,H,T,D)
        out, c_proj = self.c_proj.forward(merge_heads(bk, [y]), rng)
        return out, AttentionCache(c_q, c_kv, c_rope, c_kernel, c_proj)

    def backward(self, dout: Any, cache: AttentionCache, grads: dict[str, Any]) -> tuple[Any, Any]:
        """dout (B,T,C) -> dx (B,T,C), dmemory (B,S,C) (cross-attention; None for self-attention)"""
        bk = self.rt.bk
        dy = self.c_proj.backward(dout, cache.proj, grads)
        (dy,) = split_heads(bk, dy, (self.H,), self.D)  # (B,H,T,D)
        dq, dk, dv = self.rt.kernel.backward(bk, dy, cache.kernel)
        if cache.rope is not None:
            dq, dk = ops.rope_backward(bk, dq, cache.rope), ops.rope_backward(bk, dk, cache.rope)
        if not self.cross:
            return self.c_attn.backward(merge_heads(bk, [dq, dk, dv]), cache.q_proj, grads), None
        dx = self.c_q.backward(merge_heads(bk, [dq]), cache.q_proj, grads)
        return dx, self.c_kv.backward(merge_heads(bk, [dk, dv]), cache.kv_proj, grads)
