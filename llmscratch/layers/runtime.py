"""What every layer of one model shares: the backend, the flat parameter dict and the kernels it runs on.

A layer owns a name prefix and reads its parameters from ``rt.params`` at call time, so a model is just
the list of its layers plus one ``Runtime``. ``Specs`` is how a layer declares its parameters:
name -> (shape, init), init one of normal (std 0.02), residual (0.02/√(2L)), zeros, ones.
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

    @property
    def dropout_p(self) -> float:
        return self.dropout if self.training else 0.0


def accumulate(grads: dict[str, Any], name: str, g: Any) -> None:
    """grads[name] += g, or = g for its first use (tied weights and shared inputs get every contribution)."""
    grads[name] = g if name not in grads else grads[name] + g
