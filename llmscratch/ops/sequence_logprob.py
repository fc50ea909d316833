"""The log-probability of each row's target tokens, summed: log π(y | x) of a reply.   Legend: B rows, T time, V vocab.

forward:   logp_b = Σ_{t kept} log softmax(z_{b,t})[y_{b,t}]        kept: y ≠ ignore_index (the reply's tokens)
backward:  dz_{b,t} = dlogp_b · (onehot(y_{b,t}) - softmax(z_{b,t}))   on kept positions, 0 elsewhere
It is cross-entropy's sum per row with the sign flipped, so the gradient is again onehot − p: a preference or
a reward weighs each whole reply (dlogp_b), not each token. 16-bit logits are widened to float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import Backend
from .checks import check_ids, expect


class SequenceLogprobCache(NamedTuple):
    probs: Any  # softmax (B·T,V)
    y: Any  # targets with ignored ones set to 0 (B·T,)
    kept: Any  # (B·T,) 1.0 where kept
    shape: tuple[int, ...]  # the logits' (B,T,V)


def sequence_logprob_forward(
    bk: Backend, logits: Any, targets: Any, ignore_index: int = -100
) -> tuple[Any, SequenceLogprobCache]:
    """logits (B,T,V), targets (B,T) int -> logp (B,) (float32 for 16-bit logits)"""
    xp = bk.xp
    expect(logits.ndim == 3, "sequence_logprob_forward", f"logits must be (B,T,V), got {tuple(logits.shape)}")
    B, T, V = logits.shape
    expect(
        tuple(targets.shape) == (B, T),
        "sequence_logprob_forward",
        f"targets {tuple(targets.shape)} must be the logits' (B,T) = {(B, T)}",
    )
    check_ids(bk, targets, V, "sequence_logprob_forward", ignore_index)
    z = bk.widen(xp.reshape(logits, (B * T, V)))
    y = xp.reshape(targets, (B * T,))
    kept = xp.astype(y != ignore_index, z.dtype)
    y_safe = xp.where(y != ignore_index, y, 0)
    m = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - m)
    total = xp.sum(e, axis=-1, keepdims=True)  # (B·T,1)
    token = (xp.take_along_axis(z, y_safe[:, None], axis=1) - m - xp.log(total))[:, 0]  # log p(y_t), (B·T,)
    logp = xp.sum(xp.reshape(token * kept, (B, T)), axis=1)
    return logp, SequenceLogprobCache(e / total, y_safe, kept, (B, T, V))


def sequence_logprob_backward(bk: Backend, dlogp: Any, cache: SequenceLogprobCache) -> Any:
    """dlogp (B,) -> dlogits (B,T,V)"""
    xp = bk.xp
    B, T, V = cache.shape
    onehot = xp.astype(xp.arange(V, device=bk.device)[None, :] == cache.y[:, None], cache.probs.dtype)
    weight = xp.reshape(xp.broadcast_to(xp.reshape(dlogp, (B, 1)), (B, T)), (B * T,)) * cache.kept  # (B·T,)
    dz = (onehot - cache.probs) * weight[:, None]
    return xp.reshape(bk.narrow(dz), (B, T, V))
