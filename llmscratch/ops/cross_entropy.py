"""Softmax and cross-entropy fused into one op.   Legend: N rows (= B·T), V vocab.

forward:   loss = (1/n) Σ_{kept rows} (logsumexp(z_r) - z_r[y_r]),   n = number of kept rows (at least 1)
backward:  dz_r = dloss · (softmax(z_r) - onehot(y_r)) / n  on kept rows, 0 on rows with y_r = ignore_index
Fusing them means the backward never divides by a probability, and the gradient is exactly p - onehot.
If every target is ignored the loss is 0 with a zero gradient (PyTorch would return NaN).
16-bit logits are widened to float32 (``bk.widen``): the loss is a float32 0-d array and only dz is rounded back.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from .checks import check_ids, expect


def check_targets(logits: Any, targets: Any) -> None:
    """targets must have the shape of logits without its last axis."""
    expect(
        tuple(targets.shape) == tuple(logits.shape[:-1]),
        "cross_entropy_forward",
        f"targets {tuple(targets.shape)} must match logits {tuple(logits.shape)} without its last axis",
    )


def cross_entropy_forward(bk: Backend, logits: Any, targets: Any, ignore_index: int = -100) -> tuple[Any, Any]:
    """logits (...,V), targets (...) int -> loss () mean over the targets that are not ignore_index"""
    xp = bk.xp
    V = logits.shape[-1]
    check_targets(logits, targets)
    check_ids(bk, targets, V, "cross_entropy_forward", ignore_index)
    z = bk.widen(xp.reshape(logits, (-1, V)))  # (N,V)
    y = xp.reshape(targets, (-1,))  # (N,)
    kept = y != ignore_index
    y_safe = xp.where(kept, y, 0)
    m = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - m)
    total = xp.sum(e, axis=-1, keepdims=True)  # (N,1)
    z_target = xp.take_along_axis(z, y_safe[:, None], axis=1)  # (N,1)
    weight = xp.astype(kept, z.dtype) / xp.maximum(xp.sum(xp.astype(kept, z.dtype)), 1.0)  # (N,) = kept/n
    loss = xp.sum((m + xp.log(total) - z_target)[:, 0] * weight)
    return loss, (e / total, y_safe, weight, logits.shape)


def cross_entropy_backward(bk: Backend, dloss: Any, cache: Any) -> Any:
    """dloss () or float -> dlogits (...,V)"""
    xp = bk.xp
    probs, y_safe, weight, shape = cache
    V = probs.shape[-1]
    onehot = xp.arange(V, device=bk.device)[None, :] == y_safe[:, None]  # (N,V)
    dz = (probs - xp.astype(onehot, probs.dtype)) * (weight * dloss)[:, None]
    return xp.reshape(bk.narrow(dz), shape)
