"""What every layer of one model shares: the backend, the flat parameter dict, the kernels it runs on and
the fixed position tables, and which parameters are frozen.

A layer owns a name prefix and reads everything else from its ``Runtime`` at call time, so a model is just
the list of its layers plus one ``Runtime``. Building a layer only records names and sizes: built with
``rt=None`` it is a declaration whose ``specs()`` work (how ``Model.specs_for`` learns the parameter shapes
from a config alone). ``Specs`` is how a layer declares its parameters: name -> (shape, init), init one of
normal (std 0.02), residual (0.02/√(2L)), zeros, ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backends import Backend
from ..kernels import AttentionKernel, OpSet

Specs = dict[str, tuple[tuple[int, ...], str]]


@dataclass
class Runtime:
    bk: Backend
    kernel: AttentionKernel
    op_set: OpSet
    dropout: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    training: bool = True  # dropout is on in training mode only
    attention_maps: dict[str, Any] | None = None  # when a dict: every attention layer stores its probabilities
    rope: tuple[Any, Any] | None = None  # RoPE's cos, sin (P,D) for every position (pos="rope")
    sinusoid: Any = None  # the fixed position table (P,C) (pos="sinusoidal")
    quantized_heads: dict[str, Any] = field(default_factory=dict)  # an LM head's W name -> ops.QuantizedWeight of Wᵀ
    frozen: frozenset[str] = frozenset()  # parameters that get no gradient (a LoRA model's base weights)
    adapters_on: bool = True  # False: the LoRA adapters are skipped (the frozen base model computes)

    @property
    def dropout_p(self) -> float:
        return self.dropout if self.training else 0.0

    def learns(self, name: str) -> bool:
        """Whether parameter ``name`` gets a gradient: a frozen one's is never computed."""
        return name not in self.frozen


def layers_of(kind: type, layers: list[Any]) -> list[Any]:
    """Every layer of class ``kind`` among ``layers`` and the layers they hold, in order."""
    found: list[Any] = []
    for layer in layers:
        if isinstance(layer, kind):
            found.append(layer)
            continue
        for value in vars(layer).values():
            inner = value if isinstance(value, list) else [value]
            found += layers_of(kind, [v for v in inner if hasattr(v, "specs")])
    return found


def accumulate(grads: dict[str, Any], name: str, g: Any) -> None:
    """grads[name] += g, or = g for its first use (tied weights and shared inputs get every contribution)."""
    grads[name] = g if name not in grads else grads[name] + g
