"""A model's linear layers in int8 or int4 (weight-only; the math is in llmscratch/ops/quantize.py).

    quantize(model, "int4", group=32)    # every Linear's weight becomes an ops.QuantizedWeight, in place
    model.quantization                   # {"format": "int4", "group": 32}; None for a float model

Quantized are the weights of every ``Linear`` layer (attention's projections, the MLP, a classifier's head)
and the LM head's product: together every byte of weight a decoding step reads in full. The LM head reads W
(the token embedding when tied) through a quantized copy of Wᵀ (``mark_quantized``), while W itself stays
float for the embedding's row lookups; the copy is derived again at load, never stored. The norms, biases
and position tables stay in the model's dtype. A quantized model runs forward passes only.

On disk (``tensors`` / ``from_tensors``) a quantized weight is two tensors of model.safetensors:
``<name>`` holds q (int8, or uint8 with two int4 values a byte) and ``<name>.scale`` the scales; the
checkpoint's config.json records ``quantization``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import Backend
from ..layers.heads import LMHead
from ..layers.linear import Linear
from ..layers.runtime import layers_of
from ..ops.quantize import FORMATS, QuantizedWeight, check_format, quantize_weight
from ..util.errors import CheckpointError, ConfigError
from .base import Model

SCALE = ".scale"  # the suffix of a quantized weight's scales on disk


def linear_weights(layers: list[Any]) -> list[str]:
    """The weight names of every Linear among ``layers``, in order."""
    return [f"{layer.name}.weight" for layer in layers_of(Linear, layers)]


def mark_quantized(model: Model, quantization: dict[str, Any]) -> None:
    """Record ``quantization`` ({"format", "group"}) on a model whose Linear weights it describes, and quantize
    each LM head's Wᵀ (C,V) the same way into ``Runtime.quantized_heads``: a copy derived from W, which stays
    float for the embedding's lookups, and not written to files."""
    model.quantization = quantization
    fmt, group = quantization["format"], quantization.get("group")
    for head in layers_of(LMHead, model.layers):
        W = model.params[head.weight]
        model.rt.quantized_heads[head.weight] = quantize_weight(model.bk, model.bk.xp.matrix_transpose(W), fmt, group)


def quantize(model: Model, fmt: str = "int8", group: int | None = None) -> Model:
    """``model`` with each Linear weight quantized to ``fmt`` ("int8": a scale per output channel; "int4":
    a scale per ``group`` inputs, 32 by default), in place, returned for chaining."""
    G = check_format(fmt, group)
    if model.quantization is not None:
        raise ConfigError(
            f"this model is already quantized ({model.quantization['format']}); quantize the float model instead"
        )
    for name in linear_weights(model.layers):
        model.params[name] = quantize_weight(model.bk, model.params[name], fmt, G)
    mark_quantized(model, {"format": fmt, "group": G})
    return model


def tensors(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as plain tensors for a file: a QuantizedWeight as ``<name>`` (q) and ``<name>.scale``."""
    out: dict[str, Any] = {}
    for name, p in params.items():
        if isinstance(p, QuantizedWeight):
            out[name], out[name + SCALE] = p.q, p.scale
        else:
            out[name] = p
    return out


def from_tensors(
    bk: Backend, host: dict[str, np.ndarray], quantization: Any, specs: dict[str, Any], source: str
) -> dict[str, Any]:
    """``tensors``' inverse: host tensors and the recorded quantization -> parameters on ``bk``, each
    quantized weight checked against the shape its spec gives (a one-line CheckpointError naming it)."""
    unreadable = CheckpointError(f"{source}: its quantization record {quantization!r} is not one this version reads")
    if not (isinstance(quantization, dict) and isinstance(quantization.get("format"), str)):
        raise unreadable
    try:
        fmt, group = quantization.get("format"), check_format(quantization.get("format"), quantization.get("group"))
    except ConfigError:
        raise unreadable from None
    per_byte = FORMATS[fmt].per_byte
    params: dict[str, Any] = {}
    for name, array in host.items():
        if name.endswith(SCALE):
            continue
        if name + SCALE not in host:
            params[name] = bk.from_host({name: array})[name]
            continue
        if name not in specs:
            raise CheckpointError(
                f"{source}: it has a quantized weight {name!r} that the model does not; it was altered"
            )
        scale = host[name + SCALE]
        C, OC = specs[name][0]
        G = group or C  # int8: one group per column, as quantize_weight makes it
        Cp = -(-C // G) * G
        wanted = ((Cp // per_byte, OC), (Cp // G, OC), np.int8 if fmt == "int8" else np.uint8)
        if (array.shape, scale.shape, array.dtype.type) != wanted:
            raise CheckpointError(
                f"{source}: quantized weight {name!r} does not have the layout of {fmt}; it was altered"
            )
        q = bk.from_numpy(array, getattr(bk.xp, array.dtype.name))  # int8 or uint8 as they are
        params[name] = QuantizedWeight(fmt, q, bk.from_host({name: scale})[name], G, C)
    return params
