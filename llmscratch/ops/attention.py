"""Scaled dot-product attention, the reference ("naive") form that materialises every score.

Legend: B batch, H query heads, Hkv key/value heads (H = G·Hkv), G queries per kv head, T queries,
S keys (S = T for self-attention; the source length for cross-attention), D head dim.

forward:   A = softmax(s · Q Kᵀ + M)   (B,H,T,S),  s = 1/√D;   O = A V
backward:  dV = Aᵀ dO;   dA = dO Vᵀ;   dS = A ∘ (dA - rowsum(dA ∘ A));   dQ = s · dS K;   dK = s · dSᵀ Q

M is 0 where attention is allowed and -inf elsewhere:
- causal: query t may see key j only when j ≤ t + (S - T), i.e. the queries are the last T of S positions,
  which is also what decoding with a KV cache needs;
- key_mask (B,S) bool: False marks padding keys no query may see.
A query that may see no key at all outputs zeros (and passes no gradient), never NaN.

Grouped-query attention: query head h reads kv head h // G. Its G query heads are stacked along time,
(B,H,T,D) -> (B,Hkv,G·T,D), so one batched matmul against the shared K serves the whole group and the
sum over the group in dK, dV falls out of the matmul.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backends import Backend
from .checks import expect
from .softmax import softmax_backward, softmax_forward


def check_attention_inputs(q: Any, k: Any, v: Any, key_mask: Any, op: str) -> tuple[int, int, int, int, int, int]:
    """Validate q (B,H,T,D), k/v (B,Hkv,S,D), key_mask (B,S); return B, H, Hkv, T, S, D."""
    expect(
        q.ndim == 4 and k.ndim == 4 and v.ndim == 4,
        op,
        f"q, k, v must be 4-D (B,H,T,D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}",
    )
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    expect(tuple(k.shape) == tuple(v.shape), op, f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    expect(k.shape[0] == B and k.shape[3] == D, op, f"k {tuple(k.shape)} must be (B={B}, Hkv, S, D={D})")
    expect(H % Hkv == 0, op, f"query heads ({H}) must be a multiple of kv heads ({Hkv})")
    expect(
        key_mask is None or tuple(key_mask.shape) == (B, S),
        op,
        f"key_mask must be (B={B}, S={S}), got {None if key_mask is None else tuple(key_mask.shape)}",
    )
    return B, H, Hkv, T, S, D


def attention_mask(bk: Backend, T: int, S: int, causal: bool, key_mask: Any) -> Any:
    """-> bool mask broadcastable to (B, Hkv, G, T, S), True where attention is allowed; None if all is."""
    xp = bk.xp
    allowed = None
    if causal:
        t = xp.arange(T, device=bk.device)[:, None]
        j = xp.arange(S, device=bk.device)[None, :]
        allowed = j <= t + (S - T)  # (T,S)
    if key_mask is not None:
        keys = xp.reshape(key_mask, (key_mask.shape[0], 1, 1, 1, S))  # (B,1,1,1,S)
        allowed = keys if allowed is None else (keys & allowed)
    return allowed


class AttentionOpCache(NamedTuple):
    qg: Any  # the scaled queries, grouped by kv head (B,Hkv,G·T,D)
    k: Any  # (B,Hkv,S,D)
    v: Any  # (B,Hkv,S,D)
    att: Any  # the attention probabilities (B,Hkv,G·T,S)
    scale: float


def attention_forward(
    bk: Backend, q: Any, k: Any, v: Any, causal: bool = True, key_mask: Any = None, scale: float | None = None
) -> tuple[Any, Any]:
    """q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,D), key_mask (B,S) bool or None -> out (B,H,T,D)"""
    xp = bk.xp
    B, H, Hkv, T, S, D = check_attention_inputs(q, k, v, key_mask, "attention_forward")
    G = H // Hkv
    s = 1.0 / math.sqrt(D) if scale is None else scale
    qg = xp.reshape(q * s, (B, Hkv, G * T, D))  # scale the small Q, not the big scores
    scores = xp.reshape(qg @ xp.matrix_transpose(k), (B, Hkv, G, T, S))
    allowed = attention_mask(bk, T, S, causal, key_mask)
    if allowed is not None:
        scores = xp.where(allowed, scores, -math.inf)
    att, _ = softmax_forward(bk, xp.reshape(scores, (B, Hkv, G * T, S)))
    out = xp.reshape(att @ v, (B, H, T, D))
    return out, AttentionOpCache(qg, k, v, att, s)


def attention_backward(bk: Backend, dout: Any, cache: AttentionOpCache) -> tuple[Any, Any, Any]:
    """dout (B,H,T,D) -> dq (B,H,T,D), dk (B,Hkv,S,D), dv (B,Hkv,S,D)"""
    xp = bk.xp
    qg, k, v, att, s = cache
    dout_g = xp.reshape(dout, qg.shape)  # (B,Hkv,G·T,D)
    dv = xp.matrix_transpose(att) @ dout_g
    dscores = softmax_backward(bk, dout_g @ xp.matrix_transpose(v), att)  # zero wherever att is masked
    dq = xp.reshape((dscores @ k) * s, dout.shape)
    dk = xp.matrix_transpose(dscores) @ qg  # qg already carries the scale s
    return dq, dk, dv
