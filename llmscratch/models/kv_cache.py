"""Keys and values of the tokens seen so far, so each new token costs one position, not the whole prefix.

Legend: L layers, B batch, Hkv kv heads, S capacity (the prompt and the tokens to come, at most block_size),
D head dim.
Each layer owns k, v (B,Hkv,S,D), preallocated. A forward over T new tokens writes them at slots
[length, length+T) and attends over [0, length+T). The causal mask of the attention op is bottom-right
aligned, which is exactly what queries at the end of a longer key sequence need.

Rows of different lengths (a batch of prompts) are left-padded: row b's first ``pad[b]`` slots hold padding,
which ``key_mask`` hides from every query, and its real tokens sit at positions 0, 1, ... from slot pad[b]
on. So every row has its own length (``lengths = length - pad``) and its own positions (``offsets``), while
all rows share one slot counter and one preallocated buffer. ``reorder`` picks rows (beam search keeps the
cache of the beam each survivor came from).

The buffers take 2·L·B·Hkv·S·D numbers; a cache larger than the device's free memory (a batch of many
prompts times many beams) is refused in one line before anything is allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import Backend
from ..util.atomic import size_text
from ..util.errors import ConfigError


def check_kv_cache_fits(bk: Backend, n_layer: int, B: int, Hkv: int, capacity: int, D: int) -> None:
    """A one-line ConfigError if a cache of these sizes would not fit in the device's free memory."""
    need = 2 * n_layer * B * Hkv * capacity * D * bk.itemsize
    short = bk.memory_shortfall(need)
    if short:
        raise ConfigError(
            f"the KV cache of {B} rows (prompts × beams) needs about {size_text(need)}, and {short}; generate for "
            "fewer prompts at once, or with a smaller num_beams"
        )


class KVCache:
    def __init__(
        self, bk: Backend, n_layer: int, B: int, Hkv: int, capacity: int, D: int, pad: np.ndarray | None = None
    ) -> None:
        self.bk = bk
        self.sizes = n_layer, Hkv, capacity, D
        check_kv_cache_fits(bk, n_layer, B, Hkv, capacity, D)
        self.k = [bk.zeros((B, Hkv, capacity, D)) for _ in range(n_layer)]
        self.v = [bk.zeros((B, Hkv, capacity, D)) for _ in range(n_layer)]
        self.capacity = capacity
        self.length = 0  # slots used, the same for every row
        self.pad = np.zeros(B, dtype=np.int64) if pad is None else np.asarray(pad, dtype=np.int64)  # (B,)

    @property
    def lengths(self) -> np.ndarray:
        """(B,) real tokens cached per row"""
        return self.length - self.pad

    def offsets(self) -> int | np.ndarray:
        """The position of the next token: one int when no row is padded, else (B,) per row."""
        return self.length if not self.pad.any() else self.length - self.pad

    def key_mask(self, T: int) -> Any:
        """-> (B, length+T) bool on the device, False on padding slots; None when no row is padded."""
        if not self.pad.any():
            return None
        slots = np.arange(self.length + T)[None, :]
        return self.bk.from_numpy(slots >= self.pad[:, None])

    def append(self, layer: int, k: Any, v: Any) -> tuple[Any, Any]:
        """k, v (B,Hkv,T,D) -> all keys and values so far, (B,Hkv,length+T,D)"""
        end = self.length + k.shape[2]
        slots = (slice(None), slice(None), slice(self.length, end), slice(None))
        self.k[layer] = self.bk.assign(self.k[layer], slots, k)
        self.v[layer] = self.bk.assign(self.v[layer], slots, v)
        return self.k[layer][:, :, :end, :], self.v[layer][:, :, :end, :]

    def advance(self, T: int) -> None:
        """Called once every layer has appended its T new positions."""
        self.length += T

    def reorder(self, rows: np.ndarray) -> None:
        """Keep rows[i] as row i (B' = len(rows); a row may be repeated or dropped)."""
        if len(rows) > len(self.pad):
            n_layer, Hkv, capacity, D = self.sizes
            check_kv_cache_fits(self.bk, n_layer, len(rows), Hkv, capacity, D)
        index = self.bk.from_numpy(np.asarray(rows, dtype=np.int64))
        xp = self.bk.xp
        self.k = [xp.take(k, index, axis=0) for k in self.k]
        self.v = [xp.take(v, index, axis=0) for v in self.v]
        self.pad = self.pad[np.asarray(rows)]
