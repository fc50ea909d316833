"""Inverted dropout: zero each element with probability p, scale the survivors by 1/(1-p).

forward:   out = x · m,  m = [u ≥ p] / (1 - p),  u ~ U[0,1) from the backend's native generator
backward:  dx = dout · m
The mask depends only on the generator, so the same seed gives the same mask (per backend).
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from .checks import expect


def dropout_forward(bk: Backend, x: Any, p: float, gen: Any) -> tuple[Any, Any]:
    """x (...) -> out (...); gen from bk.generator(...); p = 0 is the identity (and draws nothing)"""
    expect(0.0 <= p < 1.0, "dropout_forward", f"p must be in [0, 1), got {p}")
    if p == 0.0:
        return x, None
    keep = bk.uniform(gen, x.shape) >= p
    m = bk.xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
    return x * m, m


def dropout_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    return dout if cache is None else dout * cache
