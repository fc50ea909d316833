"""Softmax over the last axis.

forward:   p = exp(x - max x) / Σ exp(x - max x)       (a row that is all -inf gives all zeros, not NaN)
backward:  dx = p · (dout - Σ dout · p)
A 16-bit x is exponentiated and summed in float32 (``bk.widen``); p is rounded back to the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any

from ..backends import Backend


def softmax_forward(bk: Backend, x: Any) -> tuple[Any, Any]:
    """x (..., N) -> p (..., N); the cache is p itself"""
    xp = bk.xp
    x = bk.widen(x)
    m = xp.max(x, axis=-1, keepdims=True)
    m = xp.where(m == -math.inf, 0.0, m)  # fully masked row: exp(-inf - 0) = 0 everywhere
    e = xp.exp(x - m)
    total = xp.sum(e, axis=-1, keepdims=True)
    p = bk.narrow(e / xp.where(total == 0.0, 1.0, total))
    return p, p


def softmax_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (..., N) -> dx (..., N)"""
    p, dout = bk.widen(cache), bk.widen(dout)
    return bk.narrow(p * (dout - bk.xp.sum(dout * p, axis=-1, keepdims=True)))
