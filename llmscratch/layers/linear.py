"""A linear layer over the flat parameter dict: ``<name>.weight`` (in, out) as GPT-2's Conv1D, ``<name>.bias``.

forward:   out = x @ w + b                         (the op set's matmul, or its quantized_matmul for a QuantizedWeight)
backward:  dx = dout @ wᵀ;   dw = xᵀ @ dout;   db = Σ dout
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..util.errors import ConfigError
from .runtime import Runtime, Specs, accumulate

QUANTIZED_NO_TRAINING = (
    "quantization is for inference; training stays in float32 or bf16 with master weights (load the model unquantized)"
)


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
        op_set = self.rt.op_set
        matmul = op_set.quantized_matmul if isinstance(w, ops.QuantizedWeight) else op_set.matmul
        return ops.linear_forward(self.rt.bk, x, w, b, matmul=matmul)

    def backward(self, dout: Any, cache: Any, grads: dict[str, Any]) -> Any:
        """dout (...,out) -> dx (...,in); dw, db accumulate into grads"""
        if isinstance(self.rt.params[f"{self.name}.weight"], ops.QuantizedWeight):
            raise ConfigError(QUANTIZED_NO_TRAINING)
        dx, dw, db = ops.linear_backward(self.rt.bk, dout, cache)
        accumulate(grads, f"{self.name}.weight", dw)
        if db is not None:
            accumulate(grads, f"{self.name}.bias", db)
        return dx
