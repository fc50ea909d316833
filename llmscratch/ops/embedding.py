"""Token embedding: a table lookup.   Legend: B batch, T time, C channels, V vocab.

forward:   out[b,t,:] = w[idx[b,t], :]
backward:  dw[v,:] = Σ_{b,t : idx[b,t] = v} dout[b,t,:]      (a token seen twice gets both gradients)
The backward sums a 16-bit dout in float32 (``bk.widen``): a frequent token adds up thousands of rows.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from .checks import check_ids, expect


def embedding_forward(bk: Backend, idx: Any, w: Any) -> tuple[Any, Any]:
    """idx (B,T) int, w (V,C) -> out (B,T,C)"""
    xp = bk.xp
    expect(w.ndim == 2, "embedding_forward", f"w must be (V, C), got shape {tuple(w.shape)}")
    check_ids(bk, idx, w.shape[0], "embedding_forward")
    flat = xp.reshape(idx, (-1,))  # take() wants 1-D indices on torch and strict
    out = xp.reshape(xp.take(w, flat, axis=0), (*idx.shape, w.shape[1]))
    return out, (flat, w.shape)


def embedding_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (B,T,C) -> dw (V,C)"""
    flat, (V, C) = cache
    dw = bk.zeros((V, C), dtype=bk.wide_dtype)
    return bk.narrow(bk.scatter_add_rows(dw, flat, bk.widen(bk.xp.reshape(dout, (-1, C)))))
