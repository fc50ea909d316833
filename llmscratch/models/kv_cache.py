"""Keys and values of the tokens seen so far, so each new token costs one position, not the whole prefix.

Legend: L layers, B batch, Hkv kv heads, S capacity (block_size), D head dim.
Each layer owns k, v (B,Hkv,S,D); a forward over T new tokens writes them at [length, length+T) and attends
over [0, length+T). The causal mask of the attention op is bottom-right aligned, which is exactly what
queries at the end of a longer key sequence need.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend


class KVCache:
    def __init__(self, bk: Backend, n_layer: int, B: int, Hkv: int, capacity: int, D: int) -> None:
        self.k = [bk.zeros((B, Hkv, capacity, D)) for _ in range(n_layer)]
        self.v = [bk.zeros((B, Hkv, capacity, D)) for _ in range(n_layer)]
        self.capacity = capacity
        self.length = 0

    def append(self, layer: int, k: Any, v: Any) -> tuple[Any, Any]:
        """k, v (B,Hkv,T,D) -> all keys and values so far, (B,Hkv,length+T,D)"""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length : end, :] = k
        self.v[layer][:, :, self.length : end, :] = v
        return self.k[layer][:, :, :end, :], self.v[layer][:, :, :end, :]

    def advance(self, T: int) -> None:
        """Called once every layer has appended its T new positions."""
        self.length += T
