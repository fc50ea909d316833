"""Sinusoidal position encoding ("Attention Is All You Need"): a fixed table added to the token embeddings.
Legend: T time, C channels.

pe[t, 2i] = sin(t / 10000^(2i/C)),   pe[t, 2i+1] = cos(t / 10000^(2i/C))
forward: out = x + pe[offset : offset+T];   backward: dx = dout (the table has no parameters)
pe may also hold one row of positions per sequence, (B,T,C), when the rows start at different positions.
(Learned positions are an embedding lookup of arange(T); see ops.embedding.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import Backend
from .checks import expect


def sinusoidal_table(bk: Backend, T: int, C: int, offset: int = 0) -> Any:
    """-> pe (T,C), built in float64 on the host, then cast to the backend dtype"""
    expect(C % 2 == 0, "sinusoidal_table", f"the channel count must be even, got {C}")
    t = np.arange(offset, offset + T, dtype=np.float64)[:, None]
    freq = 10000.0 ** (-np.arange(0, C, 2, dtype=np.float64) / C)[None, :]  # (1, C/2)
    pe = np.empty((T, C))
    pe[:, 0::2] = np.sin(t * freq)
    pe[:, 1::2] = np.cos(t * freq)
    return bk.from_numpy(pe)


def positions_forward(bk: Backend, x: Any, pe: Any) -> tuple[Any, Any]:
    """x (B,T,C), pe (T,C) or (B,T,C) -> out (B,T,C)"""
    expect(
        tuple(pe.shape) in (tuple(x.shape[-2:]), tuple(x.shape)),
        "positions_forward",
        f"pe {tuple(pe.shape)} must match x's last two axes {tuple(x.shape[-2:])} or all of x {tuple(x.shape)}",
    )
    return x + pe, None


def positions_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (B,T,C) -> dx (B,T,C)"""
    return dout
