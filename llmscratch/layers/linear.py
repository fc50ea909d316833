"""A linear layer over the flat parameter dict: ``<name>.weight`` (in, out) as GPT-2's Conv1D, ``<name>.bias``,
and any LoRA adapters on ranges of its output columns.

forward:   out = x @ w + b                         (the op set's matmul, or its quantized_matmul for a QuantizedWeight)
           out[:, cols] += s · drop(x) @ A @ B      for each adapter (ops/lora.py)
backward:  dx = dout @ wᵀ (+ each adapter's dx);   dw = xᵀ @ dout;   db = Σ dout   (not computed when w is frozen)

``parts`` names the ranges of output columns a LoRA target can adapt, in order: ("q", "k", "v") for the fused
attention projection, ("gate", "up") for SwiGLU's; a layer with none (a classifier) takes no adapter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..util.errors import ConfigError
from .runtime import Runtime, Specs, accumulate

QUANTIZED_NO_TRAINING = (
    "quantization is for inference; training stays in float32 or bf16 with master weights (load the model unquantized)"
)


class Adapter(NamedTuple):
    """A LoRA adapter on output columns start .. start+width of a Linear: parameters ``A`` (in, rank) and
    ``B`` (rank, width), output scaled by ``scale`` = alpha / rank, ``dropout`` on its input."""

    part: str
    A: str
    B: str
    start: int
    width: int
    rank: int
    scale: float
    dropout: float


class LinearCache(NamedTuple):
    base: Any  # ops.linear_forward's cache
    adapters: tuple[Any, ...]  # ops.lora_forward's cache of each adapter


class Linear:
    def __init__(
        self,
        rt: Runtime,
        name: str,
        n_in: int,
        n_out: int,
        bias: bool,
        init: str = "normal",
        parts: tuple[tuple[str, int], ...] = (),
    ) -> None:
        """parts: (target name, width) for each range of output columns, widths summing to n_out."""
        self.rt, self.name, self.n_in, self.n_out, self.bias, self.init = rt, name, n_in, n_out, bias, init
        self.parts = parts
        self.adapters: tuple[Adapter, ...] = ()  # set by llmscratch.layers.lora.add_adapters

    def part_ranges(self) -> list[tuple[str, int, int]]:
        """(target name, first column, width) of each of ``parts``"""
        out, start = [], 0
        for part, width in self.parts:
            out.append((part, start, width))
            start += width
        return out

    def specs(self) -> Specs:
        s: Specs = {f"{self.name}.weight": ((self.n_in, self.n_out), self.init)}
        if self.bias:
            s[f"{self.name}.bias"] = ((self.n_out,), "zeros")
        for a in self.adapters:
            s[a.A] = ((self.n_in, a.rank), "lora")
            s[a.B] = ((a.rank, a.width), "zeros")
        return s

    def forward(self, x: Any, rng: Any = None) -> tuple[Any, LinearCache]:
        """x (...,in) -> out (...,out); rng: the generator of the adapters' dropout masks"""
        rt, p = self.rt, self.rt.params
        w, b = p[f"{self.name}.weight"], p.get(f"{self.name}.bias")
        matmul = rt.op_set.quantized_matmul if isinstance(w, ops.QuantizedWeight) else rt.op_set.matmul
        out, base = ops.linear_forward(rt.bk, x, w, b, matmul=matmul)
        caches = []
        for a in self.adapters if rt.adapters_on else ():
            dropout = a.dropout if rt.training else 0.0
            delta, cache = ops.lora_forward(rt.bk, x, p[a.A], p[a.B], a.scale, dropout, rng, rt.op_set.matmul)
            if a.width == self.n_out:
                out = out + delta
            else:
                cols = (..., slice(a.start, a.start + a.width))
                out = rt.bk.assign(out, cols, out[cols] + delta)
            caches.append(cache)
        return out, LinearCache(base, tuple(caches))

    def backward(self, dout: Any, cache: LinearCache, grads: dict[str, Any]) -> Any:
        """dout (...,out) -> dx (...,in); dw, db (unless frozen) and the adapters' dA, dB accumulate into grads"""
        rt, weight = self.rt, f"{self.name}.weight"
        if isinstance(rt.params[weight], ops.QuantizedWeight):
            raise ConfigError(QUANTIZED_NO_TRAINING)
        learns = rt.learns(weight)
        dx, dw, db = ops.linear_backward(rt.bk, dout, cache.base, param_grads=learns)
        if learns:
            accumulate(grads, weight, dw)
            if db is not None:
                accumulate(grads, f"{self.name}.bias", db)
        for a, c in zip(self.adapters, cache.adapters, strict=True):
            d = dout if a.width == self.n_out else dout[..., a.start : a.start + a.width]
            dxa, dA, dB = ops.lora_backward(rt.bk, d, c, rt.op_set.matmul)
            dx = dx + dxa
            accumulate(grads, a.A, dA)
            accumulate(grads, a.B, dB)
        return dx
