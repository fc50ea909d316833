"""The log-probability of each target token.   Legend: B rows, T time, V vocab.

forward:   logp_{b,t} = log softmax(z_{b,t})[y_{b,t}]   where y_{b,t} ≠ ignore_index (a reply's tokens), else 0
backward:  dz_{b,t} = dlogp_{b,t} · (onehot(y_{b,t}) − softmax(z_{b,t}))   on kept positions, 0 elsewhere
Summed over t it is log π(y | x) of a whole reply (what DPO compares); token by token it is what a policy
gradient weighs. It is cross-entropy with the sign flipped and no mean, so the gradient is again onehot − p.
16-bit logits are widened: logp is float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import Backend
from .checks import check_ids, expect


class TokenLogprobCache(NamedTuple):
    probs: Any  # softmax (B·T,V)
    y: Any  # targets with ignored ones set to 0 (B·T,)
    kept: Any  # (B·T,) 1.0 where kept
    shape: tuple[int, ...]  # the logits' (B,T,V)


def token_logprob_forward(
    bk: Backend, logits: Any, targets: Any, ignore_index: int = -100
) -> tuple[Any, TokenLogprobCache]:
    """logits (B,T,V), targets (B,T) int -> logp (B,T), 0 where the target is ignore_index"""
    xp = bk.xp
    expect(logits.ndim == 3, "token_logprob_forward", f"logits must be (B,T,V), got {tuple(logits.shape)}")
    B, T, V = logits.shape
    expect(
        tuple(targets.shape) == (B, T),
        "token_logprob_forward",
        f"targets {tuple(targets.shape)} must be the logits' (B,T) = {(B, T)}",
    )
    check_ids(bk, targets, V, "token_logprob_forward", ignore_index)
    z = bk.widen(xp.reshape(logits, (B * T, V)))
    y = xp.reshape(targets, (B * T,))
    kept = xp.astype(y != ignore_index, z.dtype)
    y_safe = xp.where(y != ignore_index, y, 0)
    m = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - m)
    total = xp.sum(e, axis=-1, keepdims=True)  # (B·T,1)
    token = (xp.take_along_axis(z, y_safe[:, None], axis=1) - m - xp.log(total))[:, 0]  # (B·T,)
    return xp.reshape(token * kept, (B, T)), TokenLogprobCache(e / total, y_safe, kept, (B, T, V))


def token_logprob_backward(bk: Backend, dlogp: Any, cache: TokenLogprobCache) -> Any:
    """dlogp (B,T) -> dlogits (B,T,V)"""
    xp = bk.xp
    B, T, V = cache.shape
    onehot = xp.astype(xp.arange(V, device=bk.device)[None, :] == cache.y[:, None], cache.probs.dtype)
    weight = xp.reshape(dlogp, (B * T,)) * cache.kept  # (B·T,)
    return xp.reshape(bk.narrow((onehot - cache.probs) * weight[:, None]), (B, T, V))
