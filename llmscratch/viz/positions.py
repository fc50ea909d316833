"""Positional encodings: how a transformer knows where each token is.   Legend: T positions, C channels.

sinusoidal:  pe[t, 2i] = sin(t·ω_i), pe[t, 2i+1] = cos(t·ω_i), ω_i = 10000^(-2i/C): each channel pair a clock
             of its own speed. The similarity pe·peᵀ (T,T) depends only on the distance between positions.
RoPE:        channel pair i of a query or key at position t is rotated by the angle t·θ_i, so q·k depends on
             the distance between them; the angles are drawn per pair against the position.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import ops
from ..backends import get_backend
from .figure import pyplot, save


def sinusoidal_encodings(T: int, C: int, out: str | os.PathLike | None = None) -> Any:
    """-> two panels: the (T,C) table, and the (T,T) dot products between positions."""
    bk = get_backend("numpy", dtype="float64")
    pe = bk.to_numpy(ops.sinusoidal_table(bk, T, C))  # (T,C)
    fig, (table, similarity) = pyplot().subplots(1, 2, figsize=(11, 4))
    image = table.imshow(pe, aspect="auto", cmap="RdBu", vmin=-1.0, vmax=1.0, interpolation="nearest")
    table.set(xlabel="channel", ylabel="position", title=f"sinusoidal encodings ({T}×{C})")
    fig.colorbar(image, ax=table)
    image = similarity.imshow(pe @ pe.T, cmap="viridis", interpolation="nearest")
    similarity.set(xlabel="position", ylabel="position", title="pe · peᵀ: similarity by distance")
    fig.colorbar(image, ax=similarity)
    fig.tight_layout()
    return save(fig, out)


def rope_rotations(T: int, D: int, base: float = 10000.0, pairs: int = 4, out: str | os.PathLike | None = None) -> Any:
    """-> the rotation angle (mod 2π) of the first ``pairs`` channel pairs of a D-dim head, against position."""
    theta = np.asarray(ops.rope_frequencies(D, base), dtype=np.float64)  # (D/2,)
    positions = np.arange(T)
    fig, ax = pyplot().subplots(figsize=(7, 3.5))
    for i in range(min(pairs, len(theta))):
        ax.plot(positions, np.mod(positions * theta[i], 2 * np.pi), label=f"pair {i}: θ = {theta[i]:.3g}")
    ax.set(xlabel="position", ylabel="angle (radians, mod 2π)", title=f"RoPE rotations, head dim {D}, base {base:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out)
