"""Root-mean-square normalisation (Llama's norm: no centring, no bias).   Legend: C channels.

forward:   xhat = x · rstd,  rstd = 1/√(mean(x²) + eps);   out = xhat · w
backward:  dxhat = dout · w;   dx = rstd · (dxhat - xhat · mean(dxhat · xhat));   dw = Σ dout · xhat
A 16-bit x is normalised in float32 (``bk.widen``), as layernorm.py does.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from .checks import expect


def rmsnorm_forward(bk: Backend, x: Any, w: Any, eps: float = 1e-6) -> tuple[Any, Any]:
    """x (...,C), w (C,) -> out (...,C)"""
    xp = bk.xp
    C = x.shape[-1]
    expect(
        tuple(w.shape) == (C,), "rmsnorm_forward", f"w must be ({C},) to match x {tuple(x.shape)}, got {tuple(w.shape)}"
    )
    xw = bk.widen(x)
    rstd = 1.0 / xp.sqrt(xp.mean(xw * xw, axis=-1, keepdims=True) + eps)  # (...,1)
    xhat = xw * rstd
    return bk.narrow(xhat * w), (xhat, rstd, w)


def rmsnorm_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any]:
    """dout (...,C) -> dx (...,C), dw (C,)"""
    xp = bk.xp
    xhat, rstd, w = cache
    dout = bk.widen(dout)
    dxhat = dout * w
    dx = rstd * (dxhat - xhat * xp.mean(dxhat * xhat, axis=-1, keepdims=True))
    dw = xp.sum(xp.reshape(dout * xhat, (-1, w.shape[0])), axis=0)
    return bk.narrow(dx), bk.narrow(dw)
