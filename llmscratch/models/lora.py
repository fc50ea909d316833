"""Merging a LoRA model's adapters into its weights (the adapters themselves: llmscratch/layers/lora.py).

    merge(model)                          # in place: W = W₀ + s · A @ B on every adapted range of columns
    merged(config, params, bk)            # the same on a config and its parameters -> (config, params)

A merged model is a plain one: the same function, one weight per layer again (no extra product per token),
and every weight trainable. It is what a Hugging Face directory without PEFT holds.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from ..layers.linear import Linear
from ..layers.runtime import layers_of
from ..ops import QuantizedWeight, lora_delta
from ..util.errors import ConfigError
from .base import Model, collect_specs
from .config import ModelConfig, without_lora


def merged(config: ModelConfig, params: dict[str, Any], bk: Backend) -> tuple[ModelConfig, dict[str, Any]]:
    """A LoRA model's config and parameters -> the merged model's (new arrays; ``params`` is not changed)."""
    from . import model_class

    if not config.lora:
        raise ConfigError("this model has no LoRA adapters to merge")
    out = dict(params)
    for linear in layers_of(Linear, list(model_class(config.kind).build_layers(config, None).values())):
        weight = f"{linear.name}.weight"
        if linear.adapters and isinstance(out[weight], QuantizedWeight):
            raise ConfigError("merge the LoRA adapters into the float weights, then quantize")
        for a in linear.adapters:
            w = out[weight]  # (C,OC)
            C, OC = w.shape
            delta = bk.xp.astype(lora_delta(out.pop(a.A), out.pop(a.B), a.scale), w.dtype)  # (C,width)
            left, right = bk.zeros((C, a.start), dtype=w.dtype), bk.zeros((C, OC - a.start - a.width), dtype=w.dtype)
            out[weight] = w + bk.xp.concat([left, delta, right], axis=1)
    return without_lora(config), out


def merge(model: Model) -> Model:
    """Fold each LoRA adapter of ``model`` into the weight it adapts, in place (returned for chaining)."""
    model.config, params = merged(model.config, model.params, model.bk)
    model.rt.params.clear()
    model.rt.params.update(params)
    for linear in layers_of(Linear, model.layers):
        linear.adapters = ()
    model.specs = collect_specs(model.layers)
    model.rt.frozen = frozenset()
    return model
