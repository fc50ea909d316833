"""Linear (fully connected) layer.   Legend: N rows (= B·T), C in channels, OC out channels.

The weight is stored (C, OC), as GPT-2's Conv1D stores it, so the forward is a plain x @ w.
forward:   out = x @ w + b
backward:  dx = dout @ wᵀ,   dw = xᵀ @ dout,   db = Σ_n dout

The three products go through ``matmul``, which an op set may replace (the cpu-fused one is a C++ GEMM that
adds the bias as it writes the output).
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from .checks import expect


def matmul(bk: Backend, a: Any, b: Any, bias: Any = None) -> Any:
    """a (M,K), b (K,N), bias (N,) or None -> a @ b + bias (M,N)"""
    out = a @ b
    return out if bias is None else out + bias


def linear_forward(bk: Backend, x: Any, w: Any, b: Any = None, matmul: Any = matmul) -> tuple[Any, Any]:
    """x (...,C), w (C,OC), b (OC,) or None -> out (...,OC); ``matmul`` has the signature of the one above"""
    xp = bk.xp
    C, OC = w.shape
    expect(x.shape[-1] == C, "linear_forward", f"x has {x.shape[-1]} features but w is {C}x{OC} (x {tuple(x.shape)})")
    expect(
        b is None or tuple(b.shape) == (OC,),
        "linear_forward",
        f"b must be ({OC},), got {None if b is None else tuple(b.shape)}",
    )
    x2 = xp.reshape(x, (-1, C))  # (N,C)
    out = matmul(bk, x2, w, b)
    return xp.reshape(out, (*x.shape[:-1], OC)), (x2, w, b is not None, x.shape, matmul)


def linear_backward(bk: Backend, dout: Any, cache: Any, param_grads: bool = True) -> tuple[Any, Any, Any]:
    """dout (...,OC) -> dx (...,C), dw (C,OC), db (OC,) or None; param_grads False: dx alone (w and b frozen),
    dw and db None and never computed"""
    xp = bk.xp
    x2, w, has_bias, x_shape, matmul = cache
    d2 = xp.reshape(dout, (-1, w.shape[1]))  # (N,OC)
    dx = xp.reshape(matmul(bk, d2, w.T), x_shape)
    if not param_grads:
        return dx, None, None
    dw = matmul(bk, x2.T, d2)
    db = bk.narrow(xp.sum(bk.widen(d2), axis=0)) if has_bias else None  # N rows summed in float32 for 16 bits
    return dx, dw, db
