"""Elementwise nonlinearities: GELU (tanh and exact forms), ReLU, SwiGLU, tanh.   Legend: F hidden width.

gelu tanh:   out = ½x(1 + tanh u),  u = √(2/π)(x + 0.044715x³)
             computed as out = x·s with s = ½(1 + tanh u) = σ(2u) = 1/(1 + e^{-2u})   (one exp, no tanh)
             dx  = dout · (s + x·s(1-s) · 2√(2/π)(1 + 3·0.044715x²))
gelu exact:  out = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2));         dx = dout · (Φ(x) + x·φ(x)),  φ = e^{-x²/2}/√(2π)
relu:        out = max(x, 0);                                 dx = dout · [x > 0]
swiglu:      h = [g | a] (last axis split in two halves);  out = silu(g) · a,  silu(g) = g·σ(g)
             da = dout · silu(g);   dg = dout · a · σ(g)(1 + g(1 - σ(g)))
tanh:        out = tanh(x);                                   dx = dout · (1 - out²)   (BERT's pooler)
"""

from __future__ import annotations

import math
from typing import Any

from ..backends import Backend
from .checks import expect

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715
GELU_FORMS = ("tanh", "exact")
# the exponent -2u is clamped here: e^80 is finite in float32, and σ is 0 to float precision beyond it
_EXP_LIMIT = 80.0


def gelu_forward(bk: Backend, x: Any, form: str = "tanh") -> tuple[Any, Any]:
    """x (...) -> out (...); form "tanh" (GPT-2's gelu_new) or "exact" (erf)

    The tanh form goes through σ(2u) because one exp is cheaper than a tanh (6x on torch's CPU build), and
    as x·x·x, not x**3 (NumPy's float32 power is ~50x slower).
    """
    xp = bk.xp
    expect(form in GELU_FORMS, "gelu_forward", f"form must be one of {GELU_FORMS}, got {form!r}")
    if form == "tanh":
        minus_2u = x * ((-2.0 * _C) + (-2.0 * _C * _A) * (x * x))
        s = 1.0 / (1.0 + xp.exp(xp.minimum(minus_2u, _EXP_LIMIT)))  # σ(2u)
        return x * s, (x, form, s)
    phi = 0.5 * (1.0 + bk.erf(x * (1.0 / math.sqrt(2.0))))
    return x * phi, (x, form, phi)


def gelu_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    x, form, aux = cache
    if form == "tanh":
        s = aux
        du = (2.0 * _C) + (6.0 * _C * _A) * (x * x)  # 2u'
        return dout * (s + (s - s * s) * x * du)
    phi = aux
    return dout * (phi + x * bk.xp.exp(-0.5 * (x * x)) * (1.0 / math.sqrt(2.0 * math.pi)))


def relu_forward(bk: Backend, x: Any) -> tuple[Any, Any]:
    """x (...) -> out (...)"""
    positive = x > 0
    return bk.xp.where(positive, x, 0.0), positive


def relu_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    return bk.xp.where(cache, dout, 0.0)


def _sigmoid(xp: Any, x: Any) -> Any:
    """σ(x) without overflow: e = exp(-|x|); σ = 1/(1+e) for x ≥ 0, e/(1+e) otherwise."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def swiglu_forward(bk: Backend, h: Any) -> tuple[Any, Any]:
    """h (...,2F) = [gate | up] -> out (...,F)"""
    xp = bk.xp
    F2 = h.shape[-1]
    expect(F2 % 2 == 0, "swiglu_forward", f"the last axis holds [gate | up] and must be even, got {F2}")
    g, a = h[..., : F2 // 2], h[..., F2 // 2 :]
    sig = _sigmoid(xp, g)
    silu = g * sig
    return silu * a, (g, a, sig, silu)


def swiglu_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...,F) -> dh (...,2F)"""
    g, a, sig, silu = cache
    dg = dout * a * sig * (1.0 + g * (1.0 - sig))
    return bk.xp.concat([dg, dout * silu], axis=-1)


def tanh_forward(bk: Backend, x: Any) -> tuple[Any, Any]:
    """x (...) -> out (...)"""
    out = bk.xp.tanh(x)
    return out, out


def tanh_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    return dout * (1.0 - cache * cache)
