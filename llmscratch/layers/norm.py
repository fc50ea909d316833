"""LayerNorm (``<name>.weight``, ``<name>.bias``) or RMSNorm (``<name>.weight``) over the channel axis C."""

from __future__ import annotations

from typing import Any

from .. import ops
from .runtime import Runtime, Specs, accumulate

NORMS = ("layernorm", "rmsnorm")


class Norm:
    def __init__(self, rt: Runtime, name: str, C: int, kind: str, eps: float, bias: bool) -> None:
        self.rt, self.name, self.C, self.kind, self.eps = rt, name, C, kind, eps
        self.bias = bias and kind == "layernorm"  # RMSNorm has no bias

    def specs(self) -> Specs:
        s: Specs = {f"{self.name}.weight": ((self.C,), "ones")}
        if self.bias:
            s[f"{self.name}.bias"] = ((self.C,), "zeros")
        return s

    def forward(self, x: Any) -> tuple[Any, Any]:
        """x (...,C) -> out (...,C)"""
        rt, w = self.rt, self.rt.params[f"{self.name}.weight"]
        if self.kind == "rmsnorm":
            return ops.rmsnorm_forward(rt.bk, x, w, self.eps)
        return rt.op_set.layernorm_forward(rt.bk, x, w, rt.params.get(f"{self.name}.bias"), self.eps)

    def backward(self, dout: Any, cache: Any, grads: dict[str, Any]) -> Any:
        """dout (...,C) -> dx (...,C); dw (and db) accumulate into grads"""
        rt = self.rt
        if self.kind == "rmsnorm":
            dx, dw = ops.rmsnorm_backward(rt.bk, dout, cache)
            db = None
        else:
            dx, dw, db = rt.op_set.layernorm_backward(rt.bk, dout, cache)
        if rt.learns(f"{self.name}.weight"):
            accumulate(grads, f"{self.name}.weight", dw)
            if db is not None:
                accumulate(grads, f"{self.name}.bias", db)
        return dx
