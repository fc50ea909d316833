"""Which linear layers get LoRA adapters (the op is llmscratch/ops/lora.py, the layer llmscratch/layers/linear.py).

A target names one projection of every block: attention's q, k, v (its fused c_attn's column ranges, or
cross-attention's c_q and c_kv) and o (c_proj), the MLP's gate and up (c_fc; gate with SwiGLU only) and down
(c_proj). Each adapted range gets ``<linear>.<target>.lora_A`` (in, rank), drawn as PEFT draws it
(uniform in ±1/√in), and ``<linear>.<target>.lora_B`` (rank, width), zeros.
"""

from __future__ import annotations

from typing import Any

from ..util.errors import ConfigError, did_you_mean
from .linear import Adapter, Linear
from .runtime import layers_of

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
ADAPTER_SUFFIXES = (".lora_A", ".lora_B")


def parse_targets(text: str) -> tuple[str, ...]:
    """ "q,v" -> ("q", "v"); an unknown or missing name is a one-line error"""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise ConfigError(f"lora_targets names no projection; choose among {','.join(TARGETS)} (e.g. q,v)")
    for name in names:
        if name not in TARGETS:
            raise ConfigError(
                f"unknown LoRA target {name!r}{did_you_mean(name, TARGETS)}; choose among {','.join(TARGETS)}"
            )
    return names


def is_adapter(name: str) -> bool:
    """Whether parameter ``name`` is a LoRA adapter's A or B."""
    return name.endswith(ADAPTER_SUFFIXES)


def add_adapters(layers: list[Any], rank: int, alpha: float, dropout: float, targets: tuple[str, ...]) -> None:
    """Give every Linear among ``layers`` an adapter of ``rank`` on each of its parts named in ``targets``; a
    target that no layer has (gate without SwiGLU) is a one-line error."""
    found: set[str] = set()
    for linear in layers_of(Linear, layers):
        adapters = []
        for part, start, width in linear.part_ranges():
            if part in targets:
                name = f"{linear.name}.{part}"
                adapters.append(
                    Adapter(part, f"{name}.lora_A", f"{name}.lora_B", start, width, rank, alpha / rank, dropout)
                )
                found.add(part)
        linear.adapters = tuple(adapters)
    missing = [t for t in targets if t not in found]
    if missing:
        have = ",".join(t for t in TARGETS if t in {p for lin in layers_of(Linear, layers) for p, _ in lin.parts})
        raise ConfigError(f"LoRA target {missing[0]!r} names no layer of this model; its projections are {have}")
