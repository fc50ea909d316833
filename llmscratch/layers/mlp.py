"""The position-wise feed-forward layer.   Legend: C channels, F hidden width.

    out = act(x @ c_fc + b_fc) @ c_proj + b_proj        act: gelu (tanh) | gelu_exact | relu | swiglu
swiglu's c_fc holds [gate | up] (C, 2F), and act(h) = silu(gate) · up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from .linear import Linear
from .runtime import Runtime, Specs

MLPS = ("gelu", "gelu_exact", "relu", "swiglu")


class MLPCache(NamedTuple):
    fc: Any
    act: Any
    proj: Any


class MLP:
    def __init__(self, rt: Runtime, name: str, C: int, F: int, kind: str, bias: bool) -> None:
        self.rt, self.kind = rt, kind
        fc_parts = (("gate", F), ("up", F)) if kind == "swiglu" else (("up", F),)  # the LoRA targets
        self.c_fc = Linear(rt, f"{name}.c_fc", C, 2 * F if kind == "swiglu" else F, bias, parts=fc_parts)
        self.c_proj = Linear(rt, f"{name}.c_proj", F, C, bias, "residual", parts=(("down", C),))

    def specs(self) -> Specs:
        return self.c_fc.specs() | self.c_proj.specs()

    def _activation(self) -> tuple[Any, Any]:
        """(forward, backward) of the activation; GELU comes from the model's op set."""
        op_set = self.rt.op_set
        if self.kind in ("gelu", "gelu_exact"):
            form = "tanh" if self.kind == "gelu" else "exact"
            return (lambda bk, h: op_set.gelu_forward(bk, h, form)), op_set.gelu_backward
        if self.kind == "relu":
            return ops.relu_forward, ops.relu_backward
        return ops.swiglu_forward, ops.swiglu_backward

    def forward(self, x: Any, rng: Any = None) -> tuple[Any, MLPCache]:
        """x (B,T,C) -> out (B,T,C); rng: LoRA dropout's generator"""
        h, c_fc = self.c_fc.forward(x, rng)  # (B,T,F) or (B,T,2F)
        activation_forward, _ = self._activation()
        h, c_act = activation_forward(self.rt.bk, h)  # (B,T,F)
        out, c_proj = self.c_proj.forward(h, rng)
        return out, MLPCache(c_fc, c_act, c_proj)

    def backward(self, dout: Any, cache: MLPCache, grads: dict[str, Any]) -> Any:
        """dout (B,T,C) -> dx (B,T,C)"""
        dh = self.c_proj.backward(dout, cache.proj, grads)
        _, activation_backward = self._activation()
        dh = activation_backward(self.rt.bk, dh, cache.act)
        return self.c_fc.backward(dh, cache.fc, grads)
