"""Layer normalisation over the channel axis.   Legend: C channels; "..." any leading axes (B,T).

forward:   xhat = (x - mean(x)) · rstd,  rstd = 1/√(var(x) + eps);   out = xhat · w + b
backward:  dxhat = dout · w;   dx = rstd · (dxhat - mean(dxhat) - xhat · mean(dxhat · xhat))
           dw = Σ dout · xhat;   db = Σ dout          (sums over every leading axis)
A 16-bit x is normalised in float32 (``bk.widen``): mean, variance, xhat and the sums of the backward; only
out and the gradients are rounded back to the compute dtype.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from .checks import expect


def layernorm_forward(bk: Backend, x: Any, w: Any, b: Any = None, eps: float = 1e-5) -> tuple[Any, Any]:
    """x (...,C), w (C,), b (C,) or None -> out (...,C)"""
    xp = bk.xp
    C = x.shape[-1]
    expect(
        tuple(w.shape) == (C,),
        "layernorm_forward",
        f"w must be ({C},) to match x {tuple(x.shape)}, got {tuple(w.shape)}",
    )
    xw = bk.widen(x)
    xc = xw - xp.mean(xw, axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + eps)  # (...,1)
    xhat = xc * rstd
    out = xhat * w
    if b is not None:
        out = out + b
    return bk.narrow(out), (xhat, rstd, w, b is not None)


def layernorm_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (...,C) -> dx (...,C), dw (C,), db (C,) or None"""
    xp = bk.xp
    xhat, rstd, w, has_bias = cache
    C = w.shape[0]
    dout = bk.widen(dout)
    dxhat = dout * w
    dx = rstd * (dxhat - xp.mean(dxhat, axis=-1, keepdims=True) - xhat * xp.mean(dxhat * xhat, axis=-1, keepdims=True))
    dw = xp.sum(xp.reshape(dout * xhat, (-1, C)), axis=0)
    db = bk.narrow(xp.sum(xp.reshape(dout, (-1, C)), axis=0)) if has_bias else None
    return bk.narrow(dx), bk.narrow(dw), db
