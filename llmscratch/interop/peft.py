"""LoRA adapters in Hugging Face PEFT's layout, in a model directory beside (or pointing at) its base model.

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules", "rank_pattern", ...}
    adapter_model.safetensors   base_model.model.<module>.lora_A.weight (r, in), ...lora_B.weight (out, r)

PEFT adds lora_B(lora_A(dropout(x))) · lora_alpha / r to each target module's output. Our adapters sit on
ranges of a Linear's output columns (q, k, v of the fused c_attn; llmscratch/layers/lora.py), and the family's
weight rules say which of their modules holds each range:
- a module that is one range (Llama's q_proj, BERT's query) takes that range's adapter as it is, transposed;
- a module that holds several ranges (GPT-2's fused c_attn) takes them all as one adapter of the summed
  rank: the A side by side, B block-diagonal (zero where a range has no adapter), and a rank_pattern /
  alpha_pattern entry that keeps the scale alpha / r.
The weights file's metadata records our settings (rank, alpha, dropout, targets), so that reading it back
splits the blocks again. An adapter PEFT wrote reads as the same function: the ranges of one module share its
A (rank r each, B split by columns).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors.numpy

from ..layers.linear import Linear
from ..layers.lora import TARGETS
from ..layers.runtime import layers_of
from ..models import ModelConfig, model_class
from ..models.config import LORA_FIELDS
from ..util.errors import CheckpointError, ConfigError, LLMScratchError
from ..util.reading import read_json
from ..util.tensors import read_safetensors, read_safetensors_metadata
from .families import Family

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PeftModel's name for the model it wraps
SETTINGS = "llmscratch.lora"  # the metadata key of our settings
TASK_TYPES = {"gpt": "CAUSAL_LM", "encoder": "SEQ_CLS"}


class Module(NamedTuple):
    """One of their modules that holds adaptable columns start .. start+width of our ``linear``."""

    name: str
    linear: Linear
    start: int
    width: int
    conv1d: bool  # a GPT-2 Conv1D (PEFT's fan_in_fan_out), not an nn.Linear


def modules(family: type[Family], config: ModelConfig) -> Iterator[Module]:
    """Their modules, one per range of each of our linear layers that has LoRA targets (adapters when
    ``config`` has LoRA)."""
    rules = {r.ours: r for r in family.rules(family.full_config(replace(config, lora_rank=None)))}
    for linear in layers_of(Linear, list(model_class(config.kind).build_layers(config, None).values())):
        if not linear.parts:
            continue
        rule = rules[f"{linear.name}.weight"]
        start = 0
        for theirs, width in zip(rule.theirs, rule.sizes or (linear.n_out,), strict=True):
            yield Module(theirs.removesuffix(".weight"), linear, start, width, not rule.linear)
            start += width


def adapters_in(m: Module) -> list[Any]:
    """The adapters of m's linear whose columns lie in m."""
    return [a for a in m.linear.adapters if m.start <= a.start < m.start + m.width]


def adapter_files(
    family: type[Family], config: ModelConfig, tensors: dict[str, np.ndarray], home: Path
) -> dict[str, bytes | str]:
    """A LoRA model's config and host tensors -> {file name: contents} of its PEFT adapter; ``home``: the
    directory of the base model (adapter_config.json's base_model_name_or_path)."""
    scale = config.lora_alpha / config.lora_rank
    weights: dict[str, np.ndarray] = {}
    ranks: dict[str, int] = {}
    conv1d = False
    for m in modules(family, config):
        inside = adapters_in(m)
        if not inside:
            continue
        R = sum(a.rank for a in inside)
        A = np.concatenate([tensors[a.A] for a in inside], axis=1)  # (in, R)
        B = np.zeros((R, m.width), dtype=A.dtype)
        row = 0
        for a in inside:  # block-diagonal: each adapter's rows feed its own columns only
            B[row : row + a.rank, a.start - m.start : a.start - m.start + a.width] = tensors[a.B]
            row += a.rank
        weights[f"{PREFIX}{m.name}.lora_A.weight"] = np.ascontiguousarray(A.T)
        weights[f"{PREFIX}{m.name}.lora_B.weight"] = np.ascontiguousarray(B.T)
        ranks[m.name] = R
        conv1d = conv1d or m.conv1d
    wider = {n: rank for n, rank in ranks.items() if rank != config.lora_rank}
    adapter_config = {
        "peft_type": "LORA",
        "task_type": TASK_TYPES[config.kind],
        "base_model_name_or_path": str(home.resolve()),
        "r": config.lora_rank,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": sorted(ranks),
        "rank_pattern": wider,
        "alpha_pattern": {n: scale * rank for n, rank in wider.items()},
        "fan_in_fan_out": conv1d,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }
    settings = json.dumps({n: getattr(config, n) for n in LORA_FIELDS})
    return {
        ADAPTER_CONFIG: json.dumps(adapter_config, indent=2),
        ADAPTER_WEIGHTS: safetensors.numpy.save(weights, metadata={"format": "pt", SETTINGS: settings}),
    }


def adapter_base(path: Path) -> Path:
    """The base model directory of the adapter in ``path``: ``path`` itself when it holds a model, else the
    local directory its adapter_config.json names."""
    if (path / "config.json").is_file():
        return path
    base = read_json(path / ADAPTER_CONFIG, CheckpointError).get("base_model_name_or_path")
    if not isinstance(base, str) or not (Path(base) / "config.json").is_file():
        raise CheckpointError(
            f"{path / ADAPTER_CONFIG}: its base model {base!r} is not a local model directory; download the base "
            "model and set base_model_name_or_path to its directory"
        )
    return Path(base)


def read_adapter(
    path: Path, family: type[Family], base: ModelConfig, specs_dtype: np.dtype
) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The PEFT adapter in ``path`` for a base model of ``base`` -> the LoRA model's config and its adapter
    tensors (our names and layouts)."""
    source = path / ADAPTER_CONFIG
    settings = read_json(source, CheckpointError)
    if not isinstance(settings, dict):
        raise CheckpointError(f"{source} is not a JSON object; it is damaged")
    unsupported = [
        f"{key}={settings.get(key)!r}"
        for key, fine in (
            ("peft_type", "LORA"),
            ("use_dora", False),
            ("use_rslora", False),
            ("bias", "none"),
            ("layers_to_transform", None),
        )
        if settings.get(key, fine) != fine
    ]
    if unsupported:
        raise ConfigError(f"{source}: llmscratch reads plain LoRA adapters, and this one has {', '.join(unsupported)}")
    weights = {n.removeprefix(PREFIX): a for n, a in read_safetensors(path / ADAPTER_WEIGHTS).items()}
    recorded = read_safetensors_metadata(path / ADAPTER_WEIGHTS).get(SETTINGS)
    ours = {m.name: m for m in modules(family, base)}
    lora_A = {n.removesuffix(".lora_A.weight"): a for n, a in weights.items() if n.endswith(".lora_A.weight")}
    stray = [n for n in weights if n.rsplit(".lora_", 1)[0] not in ours or ".lora_" not in n]
    if stray:
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: {stray[0]} is not a LoRA weight of a module this model has")
    try:
        fields = json.loads(recorded) if recorded is not None else _inferred(settings, lora_A, ours, source)
        config = replace(base, **fields)
    except (TypeError, ValueError, LLMScratchError) as e:
        raise CheckpointError(f"{path}: its adapter does not fit the model ({e})") from None
    tensors: dict[str, np.ndarray] = {}
    for m in modules(family, config):
        inside = adapters_in(m)
        if not inside:
            continue
        if m.name not in lora_A or f"{m.name}.lora_B.weight" not in weights:
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS} has no adapter for {m.name}; it is incomplete")
        A, B = lora_A[m.name].T, weights[f"{m.name}.lora_B.weight"].T  # (in, R), (R, width)
        blocks = A.shape[1] == sum(a.rank for a in inside)  # ours: one block of rows per adapter
        if (
            A.shape[0] != m.linear.n_in
            or B.shape != (A.shape[1], m.width)
            or not (blocks or A.shape[1] == inside[0].rank)
        ):
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: the adapter of {m.name} does not have this model's shape")
        row = 0
        for a in inside:
            rows = slice(row, row + a.rank) if blocks else slice(None)
            cols = slice(a.start - m.start, a.start - m.start + a.width)
            tensors[a.A], tensors[a.B] = np.asarray(A[:, rows], specs_dtype), np.asarray(B[rows, cols], specs_dtype)
            row += a.rank
    return config, tensors


def _inferred(settings: dict, lora_A: dict[str, np.ndarray], ours: dict[str, Module], source: Path) -> dict:
    """Our LoRA fields for an adapter PEFT wrote: the targets its modules cover, one rank and one scale."""
    ranks = {n: a.shape[0] for n, a in lora_A.items()}
    r, alpha = settings.get("r", 8), settings.get("lora_alpha", 8)
    scales = {n: settings.get("alpha_pattern", {}).get(n, alpha) / R for n, R in ranks.items()}
    if len(set(ranks.values())) > 1 or len(set(scales.values())) > 1:
        raise ConfigError(f"{source}: its modules have different ranks or scales; llmscratch gives every adapter one")
    R = next(iter(ranks.values()), r)
    targets = [
        part
        for n in lora_A
        for part, start, _ in ours[n].linear.part_ranges()
        if ours[n].start <= start < ours[n].start + ours[n].width
    ]
    order = [t for t in TARGETS if t in targets]
    return {
        "lora_rank": R,
        "lora_alpha": next(iter(scales.values()), 1.0) * R,
        "lora_dropout": settings.get("lora_dropout", 0.0),
        "lora_targets": ",".join(order),
    }
