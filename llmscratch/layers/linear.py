"""A linear layer over the flat parameter dict: ``<name>.weight`` (in, out) as GPT-2's Conv1D, ``<name>.bias``.

forward:   out = x @ w + b                         (the op set's matmul)
backward:  dx = dout @ wᵀ;   dw = xᵀ @ dout;   db = Σ dout
"""

from __future__ import annotations

from typing import Any

from .. import ops
from .runtime import Runtime, Specs, accumulate


class Linear:
    def __init__(self, rt: Runtime, name: str, n_in: int, n_out: int, bias: bool, init: str = "normal") -> None:
        self.rt, self.name, self.n_in, self.n_out, self.bias, self.init = rt, name, n_in, n_out, bias, init

    def specs(self) -> Specs:
        s: Specs = {f"{self.name}.weight": ((self.n_in, self.n_out), self.init)}
        if self.bias:
            s[f"{self.name}.bias"] = ((self.n_out,), "zeros")
        return s

    def forward(self, x: Any) -> tuple[Any, Any]:
        """x (...,in) -> out (...,out)"""
        p = self.rt.params
        w, b = p[f"{self.name}.weight"], p.get(f"{self.name}.bias")
        return ops.linear_forward(self.rt.bk, x, w, b, matmul=self.rt.op_set.matmul)

    def backward(self, dout: Any, cache: Any, grads: dict[str, Any]) -> Any:
        """dout (...,out) -> dx (...,in); dw, db accumulate into grads"""
        dx, dw, db = ops.linear_backward(self.rt.bk, dout, cache)
        accumulate(grads, f"{self.name}.weight", dw)
        if db is not None:
            accumulate(grads, f"{self.name}.bias", db)
        return dx
