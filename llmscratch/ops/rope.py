"""Rotary position embedding (RoPE), in the rotate-half form Llama and GPT-NeoX use.   Legend: T time, D head dim.

Channel i and i + D/2 of each head form a pair rotated by the angle (offset + t) · θ_i,  θ_i = base^(-2i/D)
(or rescaled for a longer context, ``rope_frequencies``):
forward:   out = x · cos + rotate_half(x) · sin,       rotate_half([x1 | x2]) = [-x2 | x1]
backward:  dx  = dout · cos + rotate_halfᵀ(dout · sin),  rotate_halfᵀ([y1 | y2]) = [y2 | -y1]
The tables are built on the host in float64 and then cast, so every backend rotates by the same angles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import Backend
from .checks import expect

# each rope_type -> the rope_frequencies arguments it uses
ROPE_SCALINGS = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_context"),
}
ROPE_TYPES = tuple(ROPE_SCALINGS)


def rope_frequencies(
    D: int,
    base: float = 10000.0,
    rope_type: str = "default",
    factor: float = 1.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_context: int = 8192,
) -> np.ndarray:
    """-> θ (D/2,) float64: θ_i = base^(-2i/D), rescaled to stretch a model's context (transformers' rope_type):

    linear:  θ_i / factor                 (every position divided by factor)
    llama3:  with the wavelength λ_i = 2π/θ_i and L = original_context (Llama 3.1):
             λ_i > L/low_freq_factor:    θ_i / factor           (long waves, slow rotations: stretched)
             λ_i < L/high_freq_factor:   θ_i                    (short waves: kept)
             between:                    (1 - s)·θ_i/factor + s·θ_i,   s = (L/λ_i - low) / (high - low)
    """
    theta = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    if rope_type == "linear":
        return theta / factor
    if rope_type == "llama3":
        wavelength = 2 * np.pi / theta
        s = (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
        blended = (1 - s) * theta / factor + s * theta
        long, short = wavelength > original_context / low_freq_factor, wavelength < original_context / high_freq_factor
        return np.where(long, theta / factor, np.where(short, theta, blended))
    return theta


def rope_tables(bk: Backend, T: int, D: int, offset: int = 0, base: float = 10000.0, **scaling: Any) -> tuple[Any, Any]:
    """-> cos (T,D), sin (T,D) for positions offset .. offset+T-1; ``scaling``: rope_frequencies' rope_type,
    factor, low_freq_factor, high_freq_factor, original_context"""
    expect(D % 2 == 0, "rope_tables", f"the head dim must be even for RoPE, got {D}")
    inv_freq = rope_frequencies(D, base, **scaling)  # (D/2,)
    angles = np.arange(offset, offset + T, dtype=np.float64)[:, None] * inv_freq[None, :]  # (T, D/2)
    angles = np.concatenate([angles, angles], axis=-1)  # (T, D)
    return bk.from_numpy(np.cos(angles)), bk.from_numpy(np.sin(angles))


def rope_forward(bk: Backend, x: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """x (B,H,T,D), cos/sin (T,D), or (B,1,T,D) when each row has its own positions -> out (B,H,T,D)"""
    xp = bk.xp
    B, T, D = x.shape[0], x.shape[-2], x.shape[-1]
    expect(
        tuple(cos.shape) in ((T, D), (B, 1, T, D)),
        "rope_forward",
        f"cos/sin must be (T={T}, D={D}) or (B={B}, 1, T, D), got {tuple(cos.shape)}",
    )
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + xp.concat([-x2, x1], axis=-1) * sin, (cos, sin)


def rope_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (B,H,T,D) -> dx (B,H,T,D)"""
    cos, sin = cache
    D = dout.shape[-1]
    ds = dout * sin
    return dout * cos + bk.xp.concat([ds[..., D // 2 :], -ds[..., : D // 2]], axis=-1)
