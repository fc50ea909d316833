"""LoRA, a low-rank update beside a frozen linear layer.   Legend: N rows (= B·T), C in, W out, r rank.

A frozen weight W₀ (C,W) learns through a product of two thin matrices instead of itself:
    out = x @ W₀ + s · drop(x) @ A @ B          A (C,r), B (r,W), s = alpha / r,  r ≪ min(C, W)
so a (C,W) update costs r·(C+W) numbers. A starts random and B at zero: training begins at W₀ exactly.
This op is the second term, the adapter's output (the layer adds it to the frozen product):
forward:   h = drop(x) @ A   (N,r);   out = s · h @ B   (N,W)
backward:  dB = s · hᵀ @ dout;   dh = s · dout @ Bᵀ;   dA = drop(x)ᵀ @ dh;   dx = drop_backward(dh @ Aᵀ)
Merged, the layer is one weight again: W = W₀ + s · A @ B (``lora_delta``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import Backend
from .checks import expect
from .dropout import dropout_backward, dropout_forward
from .linear import matmul


class LoRACache(NamedTuple):
    x2: Any  # drop(x), (N,C)
    h: Any  # drop(x) @ A, (N,r)
    A: Any
    B: Any
    scale: float
    dropout: Any  # the dropout mask, or None
    x_shape: tuple[int, ...]


def lora_forward(
    bk: Backend, x: Any, A: Any, B: Any, scale: float, p: float = 0.0, gen: Any = None, matmul: Any = matmul
) -> tuple[Any, LoRACache]:
    """x (...,C), A (C,r), B (r,W) -> s · drop(x) @ A @ B (...,W); dropout p with generator gen (as
    dropout_forward); ``matmul`` as linear_forward's"""
    xp = bk.xp
    C, r = A.shape
    expect(x.shape[-1] == C, "lora_forward", f"x has {x.shape[-1]} features but A is {C}x{r}")
    expect(B.shape[0] == r, "lora_forward", f"A is {C}x{r} but B is {B.shape[0]}x{B.shape[1]}: their ranks differ")
    x2, mask = dropout_forward(bk, xp.reshape(x, (-1, C)), p, gen)  # (N,C)
    h = matmul(bk, x2, A)  # (N,r)
    out = matmul(bk, h, B) * scale  # (N,W)
    return xp.reshape(out, (*x.shape[:-1], B.shape[1])), LoRACache(x2, h, A, B, scale, mask, tuple(x.shape))


def lora_backward(bk: Backend, dout: Any, cache: LoRACache, matmul: Any = matmul) -> tuple[Any, Any, Any]:
    """dout (...,W) -> dx (...,C), dA (C,r), dB (r,W)"""
    xp = bk.xp
    x2, h, A, B, s, mask, x_shape = cache
    d2 = xp.reshape(dout, (-1, B.shape[1])) * s  # (N,W)
    dB = matmul(bk, h.T, d2)  # (r,W)
    dh = matmul(bk, d2, B.T)  # (N,r)
    dA = matmul(bk, x2.T, dh)  # (C,r)
    dx = dropout_backward(bk, matmul(bk, dh, A.T), mask)  # (N,C)
    return xp.reshape(dx, x_shape), dA, dB


def lora_delta(A: Any, B: Any, scale: float) -> Any:
    """A (C,r), B (r,W) -> the update s · A @ B (C,W) that merging adds to the frozen weight"""
    return (A @ B) * scale
