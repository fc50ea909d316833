"""How each Hugging Face architecture maps onto llmscratch's models: its config fields, and one list of
weight rules that serves both directions (loading and saving).

A ``Rule`` says that one of our tensors is one or more of theirs, side by side along our last axis:

    ours = concat([tᵀ if linear else t for t in theirs], axis=-1)         loading
    theirs = split(ours, sizes, axis=-1), each transposed back if linear    saving

``linear``: theirs is a ``torch.nn.Linear`` weight (out, in), ours the (in, out) layout of GPT-2's Conv1D.
So GPT-2 maps name for name; Llama's separate q/k/v (and gate/up) projections become our fused
``c_attn`` (and ``c_fc``); BERT's query/key/value likewise, with its embeddings' LayerNorm, token types and
pooler. Names in ``theirs`` are the full names of the family's head model (``GPT2LMHeadModel``,
``LlamaForCausalLM``, ``BertForSequenceClassification``); a file of the bare model (``GPT2Model``, ...) or of
original GPT-2 weights lacks the base prefix, which ``canonical_name`` puts back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ..models import ModelConfig
from ..ops import ROPE_TYPES
from ..util.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: tuple[str, ...]
    sizes: tuple[int, ...] = ()  # widths of the parts along our last axis (when theirs has several)
    linear: bool = False

    def load(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """their tensors -> ours"""
        parts = [tensors[n].T if self.linear else tensors[n] for n in self.theirs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def save(self, a: np.ndarray) -> dict[str, np.ndarray]:
        """ours -> their tensors (contiguous copies)"""
        parts = [a] if len(self.theirs) == 1 else np.split(a, np.cumsum(self.sizes)[:-1], axis=-1)
        return {n: np.ascontiguousarray(p.T if self.linear else p) for n, p in zip(self.theirs, parts, strict=True)}

    def their_shapes(self, ours: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """the shapes theirs must have for ours to have shape ``ours``"""
        widths = self.sizes or (ours[-1],)
        shapes = [(*ours[:-1], w) for w in widths]
        return {n: s[::-1] if self.linear else s for n, s in zip(self.theirs, shapes, strict=True)}


def _get(hf: dict[str, Any], name: str, default: Any = None) -> Any:
    value = hf.get(name, default)
    return default if value is None else value


def _refuse(family: str, checks: dict[str, bool]) -> None:
    """checks: what a config.json uses -> whether llmscratch lacks it; a one-line error naming each lacking one."""
    lacking = [what for what, bad in checks.items() if bad]
    if lacking:
        raise ConfigError(f"this {family} config uses what llmscratch does not build: {'; '.join(lacking)}")


def _differences(cfg: ModelConfig, checks: dict[str, bool]) -> list[str]:
    """checks: field -> whether cfg's value fits the family; -> "field=value" for each that does not."""
    return [f"{name}={getattr(cfg, name)}" for name, ok in checks.items() if not ok]


def _decoder_only(cfg: ModelConfig) -> dict[str, bool]:
    """What GPT-2 and Llama share: a GPT, pre-LN with a final norm, no token types, no embedding norm."""
    return {
        "kind": cfg.kind == "gpt",
        "norm_first": cfg.norm_first,
        "final_norm": cfg.has_final_norm,
        "type_vocab_size": cfg.type_vocab_size == 0,
        "embed_norm": not cfg.embed_norm,
    }


# our field -> its name in config.json's rope_parameters (rope_scaling before transformers 5)
ROPE_SCALING = {
    "rope_type": "rope_type",
    "rope_factor": "factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_context": "original_max_position_embeddings",
}

ACTIVATIONS = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
}
HF_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}


class Family:
    """One Hugging Face architecture family."""

    name: ClassVar[str]  # model_type in config.json
    architectures: ClassVar[tuple[str, ...]]  # the classes whose files it reads; the first is what it writes
    base_prefix: ClassVar[str]  # the base model's name prefix inside the head model
    heads: ClassVar[tuple[str, ...]]  # names outside the base model (head weights)
    ignored: ClassVar[str] = ""  # a regex of names in files that are not weights (buffers) or heads not used
    needs: ClassVar[str]  # what a model must be to be saved as this family, for errors

    @classmethod
    def canonical_name(cls, name: str) -> str:
        """A file's tensor name as the head model names it (the base prefix added where it lacks)."""
        if name.startswith(cls.base_prefix) or any(name.startswith(h) for h in cls.heads):
            return name
        return cls.base_prefix + name

    @classmethod
    def architecture(cls, hf: dict[str, Any]) -> dict[str, Any]:
        """config.json -> ModelConfig fields; a one-line error for what llmscratch does not build"""
        raise NotImplementedError

    @classmethod
    def hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        """ModelConfig -> config.json's fields"""
        raise NotImplementedError

    @classmethod
    def problems(cls, cfg: ModelConfig) -> list[str]:
        """What stops a model of ``cfg`` from being this family (empty: it can be saved as one)."""
        raise NotImplementedError

    @classmethod
    def full_config(cls, cfg: ModelConfig) -> ModelConfig:
        """cfg as the family stores it: a tensor we do without (a bias, a token-type table) is saved as
        zeros, which computes the same."""
        return cfg

    @classmethod
    def rules(cls, cfg: ModelConfig) -> list[Rule]:
        raise NotImplementedError


def _linear_rules(ours: str, theirs: str | tuple[str, ...], bias: bool, sizes: tuple[int, ...] = ()) -> list[Rule]:
    """ours.weight (and .bias) from one nn.Linear, or from several side by side, ``sizes`` their widths
    (q/k/v -> c_attn, gate/up -> c_fc); names without .weight"""
    parts = (theirs,) if isinstance(theirs, str) else theirs
    rules = [Rule(f"{ours}.weight", tuple(f"{t}.weight" for t in parts), sizes, linear=True)]
    return rules + ([Rule(f"{ours}.bias", tuple(f"{t}.bias" for t in parts), sizes)] if bias else [])


def _attention_rules(ours: str, q: str, k: str, v: str, o: str, cfg: ModelConfig, bias: bool) -> list[Rule]:
    """our fused c_attn from separate q/k/v nn.Linear layers, c_proj from o"""
    sizes = (cfg.n_head * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim)
    return _linear_rules(f"{ours}.c_attn", (q, k, v), bias, sizes) + _linear_rules(f"{ours}.c_proj", o, bias)


def _norm_rules(ours: str, theirs: str, bias: bool) -> list[Rule]:
    return [Rule(f"{ours}.{p}", (f"{theirs}.{p}",)) for p in ("weight", "bias")[: 2 if bias else 1]]


class GPT2(Family):
    name = "gpt2"
    architectures = ("GPT2LMHeadModel", "GPT2Model")
    base_prefix = "transformer."
    heads = ("lm_head.",)
    ignored = r"\.attn\.(bias|masked_bias)$"  # the causal-mask buffers older files carry
    needs = "pos=learned, norm=layernorm, mlp=gelu|gelu_exact|relu, norm_first, a final norm, n_kv_head = n_head"

    @classmethod
    def architecture(cls, hf: dict[str, Any]) -> dict[str, Any]:
        act = _get(hf, "activation_function", "gelu_new")
        _refuse(
            "GPT-2",
            {
                f"activation_function {act!r} (supported: {', '.join(ACTIVATIONS)})": act not in ACTIVATIONS,
                "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx")),
                "scale_attn_weights=false": hf.get("scale_attn_weights") is False,
                "add_cross_attention": bool(hf.get("add_cross_attention")),
            },
        )
        return {
            "kind": "gpt",
            "vocab_size": hf["vocab_size"],
            "block_size": _get(hf, "n_positions", 1024),
            "n_layer": hf["n_layer"],
            "n_head": hf["n_head"],
            "n_embd": hf["n_embd"],
            "n_inner": hf.get("n_inner"),
            "mlp": ACTIVATIONS.get(act, "gelu"),
            "norm_eps": _get(hf, "layer_norm_epsilon", 1e-5),
            "bias": True,
            "tie_embeddings": _get(hf, "tie_word_embeddings", True),
            "dropout": _get(hf, "resid_pdrop", 0.0),
        }

    @classmethod
    def problems(cls, cfg: ModelConfig) -> list[str]:
        return _differences(
            cfg,
            {
                **_decoder_only(cfg),
                "pos": cfg.pos == "learned",
                "norm": cfg.norm == "layernorm",
                "mlp": cfg.mlp in HF_ACTIVATION,
                "n_kv_head": cfg.kv_heads == cfg.n_head,
            },
        )

    @classmethod
    def full_config(cls, cfg: ModelConfig) -> ModelConfig:
        return replace(cfg, bias=True, mlp_bias=None)

    @classmethod
    def hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "vocab_size": cfg.vocab_size,
            "n_positions": cfg.block_size,
            "n_embd": cfg.n_embd,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_inner": cfg.n_inner,
            "activation_function": HF_ACTIVATION[cfg.mlp],
            "layer_norm_epsilon": cfg.norm_eps,
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": cfg.tie_embeddings,
        }

    @classmethod
    def rules(cls, cfg: ModelConfig) -> list[Rule]:
        from ..models import GPT

        names = list(GPT.specs_for(cfg))
        return [Rule(n, (n,)) for n in names]  # our names are GPT-2's, our layouts its Conv1D's


class Llama(Family):
    name = "llama"
    architectures = ("LlamaForCausalLM", "LlamaModel")
    base_prefix = "model."
    heads = ("lm_head.",)
    ignored = r"rotary_emb\.inv_freq$"
    needs = "pos=rope, norm=rmsnorm, mlp=swiglu, norm_first, a final norm"

    @classmethod
    def architecture(cls, hf: dict[str, Any]) -> dict[str, Any]:
        rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}  # the old name, the new
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        heads = hf["num_attention_heads"]
        head_dim = _get(hf, "head_dim", hf["hidden_size"] // heads)
        act = _get(hf, "hidden_act", "silu")
        _refuse(
            "Llama",
            {
                f"rope_type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})": rope_type not in ROPE_TYPES,
                f"head_dim {head_dim} ≠ hidden_size / num_attention_heads": head_dim * heads != hf["hidden_size"],
                f"hidden_act {act!r} (supported: silu)": act != "silu",
                f"pretraining_tp {_get(hf, 'pretraining_tp', 1)}": _get(hf, "pretraining_tp", 1) != 1,
            },
        )
        bias = bool(hf.get("attention_bias", False))
        mlp_bias = bool(hf.get("mlp_bias", False))
        return {
            "kind": "gpt",
            "vocab_size": hf["vocab_size"],
            "block_size": _get(hf, "max_position_embeddings", 2048),
            "n_layer": hf["num_hidden_layers"],
            "n_head": heads,
            "n_kv_head": _get(hf, "num_key_value_heads", heads),
            "n_embd": hf["hidden_size"],
            "n_inner": hf["intermediate_size"],
            "pos": "rope",
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "norm_eps": _get(hf, "rms_norm_eps", 1e-6),
            "rope_base": float(rope.get("rope_theta", _get(hf, "rope_theta", 10000.0))),
            **{ours: rope[theirs] for ours, theirs in ROPE_SCALING.items() if theirs in rope},
            "bias": bias,
            "mlp_bias": None if mlp_bias == bias else mlp_bias,
            "tie_embeddings": _get(hf, "tie_word_embeddings", False),
            "dropout": _get(hf, "attention_dropout", 0.0),
        }

    @classmethod
    def problems(cls, cfg: ModelConfig) -> list[str]:
        return _differences(
            cfg,
            {
                **_decoder_only(cfg),
                "pos": cfg.pos == "rope",
                "norm": cfg.norm == "rmsnorm",
                "mlp": cfg.mlp == "swiglu",
            },
        )

    @classmethod
    def hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.n_embd,
            "intermediate_size": cfg.hidden,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.kv_heads,
            "head_dim": cfg.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": cfg.block_size,
            "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_base,
            "rope_parameters": {
                "rope_theta": cfg.rope_base,
                **{theirs: getattr(cfg, ours) for ours, theirs in ROPE_SCALING.items() if ours in cfg.rope_fields()},
            },
            "attention_bias": cfg.bias,
            "mlp_bias": cfg.has_mlp_bias,
            "attention_dropout": cfg.dropout,
            "tie_word_embeddings": cfg.tie_embeddings,
        }

    @classmethod
    def rules(cls, cfg: ModelConfig) -> list[Rule]:
        rules = [
            Rule("transformer.wte.weight", ("model.embed_tokens.weight",)),
            Rule("transformer.ln_f.weight", ("model.norm.weight",)),
        ]
        if not cfg.tie_embeddings:
            rules.append(Rule("lm_head.weight", ("lm_head.weight",)))
        for i in range(cfg.n_layer):
            ours, hf = f"transformer.h.{i}", f"model.layers.{i}"
            a, m = f"{hf}.self_attn", f"{hf}.mlp"
            rules += [
                Rule(f"{ours}.ln_1.weight", (f"{hf}.input_layernorm.weight",)),
                Rule(f"{ours}.ln_2.weight", (f"{hf}.post_attention_layernorm.weight",)),
                *_attention_rules(
                    f"{ours}.attn", f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj", f"{a}.o_proj", cfg, cfg.bias
                ),
            ]
            fc = (f"{m}.gate_proj", f"{m}.up_proj")
            rules += _linear_rules(f"{ours}.mlp.c_fc", fc, cfg.has_mlp_bias, (cfg.hidden,) * 2)
            rules += _linear_rules(f"{ours}.mlp.c_proj", f"{m}.down_proj", cfg.has_mlp_bias)
        return rules


class Bert(Family):
    name = "bert"
    architectures = ("BertForSequenceClassification", "BertModel", "BertForMaskedLM", "BertForPreTraining")
    base_prefix = "bert."
    heads = ("classifier.", "cls.")
    ignored = r"^cls\.|position_ids$"  # the pretraining heads (masked LM, next sentence) are not used
    needs = (
        "kind=encoder, norm_first=False (post-LN), pos=learned, norm=layernorm, mlp=gelu_exact|gelu|relu, "
        "embed_norm, pooler, pooling=cls, no final norm, n_kv_head = n_head"
    )

    @classmethod
    def architecture(cls, hf: dict[str, Any]) -> dict[str, Any]:
        act = _get(hf, "hidden_act", "gelu")
        position = _get(hf, "position_embedding_type", "absolute")
        problem = hf.get("problem_type")
        labels = hf.get("id2label") or {}
        n_classes = len(labels) if labels else _get(hf, "num_labels", 2)
        _refuse(
            "BERT",
            {
                f"hidden_act {act!r} (supported: {', '.join(ACTIVATIONS)})": act not in ACTIVATIONS,
                f"position_embedding_type {position!r} (supported: absolute)": position != "absolute",
                f"problem_type {problem!r} (supported: single_label_classification)": problem
                not in (None, "single_label_classification"),
                "num_labels 1 (regression)": n_classes == 1,
                "is_decoder": bool(hf.get("is_decoder")),
            },
        )
        return {
            "kind": "encoder",
            "vocab_size": hf["vocab_size"],
            "block_size": _get(hf, "max_position_embeddings", 512),
            "n_layer": hf["num_hidden_layers"],
            "n_head": hf["num_attention_heads"],
            "n_embd": hf["hidden_size"],
            "n_inner": hf["intermediate_size"],
            "mlp": ACTIVATIONS.get(act, "gelu_exact"),
            "norm_eps": _get(hf, "layer_norm_eps", 1e-12),
            "bias": True,
            "norm_first": False,
            "type_vocab_size": _get(hf, "type_vocab_size", 2),
            "embed_norm": True,
            "pooler": True,
            "pooling": "cls",
            "n_classes": n_classes,
            "dropout": _get(hf, "hidden_dropout_prob", 0.0),
        }

    @classmethod
    def problems(cls, cfg: ModelConfig) -> list[str]:
        return _differences(
            cfg,
            {
                "kind": cfg.kind == "encoder",
                "norm_first": not cfg.norm_first,
                "pos": cfg.pos == "learned",
                "norm": cfg.norm == "layernorm",
                "mlp": cfg.mlp in HF_ACTIVATION,
                "embed_norm": cfg.embed_norm,
                "pooler": cfg.pooler,
                "pooling": cfg.pooling == "cls",
                "final_norm": not cfg.has_final_norm,
                "n_kv_head": cfg.kv_heads == cfg.n_head,
            },
        )

    @classmethod
    def full_config(cls, cfg: ModelConfig) -> ModelConfig:
        return replace(cfg, bias=True, mlp_bias=None, type_vocab_size=max(cfg.type_vocab_size, 1))

    @classmethod
    def hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        labels = meta.get("labels") or [f"LABEL_{i}" for i in range(cfg.n_classes)]
        return {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.n_embd,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "intermediate_size": cfg.hidden,
            "hidden_act": HF_ACTIVATION[cfg.mlp],
            "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.dropout,
            "max_position_embeddings": cfg.block_size,
            "type_vocab_size": max(cfg.type_vocab_size, 1),
            "layer_norm_eps": cfg.norm_eps,
            "position_embedding_type": "absolute",
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        }

    @classmethod
    def rules(cls, cfg: ModelConfig) -> list[Rule]:
        e = "bert.embeddings"
        rules = [
            Rule("encoder.wte.weight", (f"{e}.word_embeddings.weight",)),
            Rule("encoder.wpe.weight", (f"{e}.position_embeddings.weight",)),
        ]
        if cfg.type_vocab_size:
            rules.append(Rule("encoder.wtt.weight", (f"{e}.token_type_embeddings.weight",)))
        rules += _norm_rules("encoder.ln_e", f"{e}.LayerNorm", cfg.bias)
        for i in range(cfg.n_layer):
            ours, hf = f"encoder.h.{i}", f"bert.encoder.layer.{i}"
            s = f"{hf}.attention.self"
            rules += [
                *_attention_rules(
                    f"{ours}.attn",
                    f"{s}.query",
                    f"{s}.key",
                    f"{s}.value",
                    f"{hf}.attention.output.dense",
                    cfg,
                    cfg.bias,
                ),
                *_norm_rules(f"{ours}.ln_1", f"{hf}.attention.output.LayerNorm", cfg.bias),
                *_linear_rules(f"{ours}.mlp.c_fc", f"{hf}.intermediate.dense", cfg.has_mlp_bias),
                *_linear_rules(f"{ours}.mlp.c_proj", f"{hf}.output.dense", cfg.has_mlp_bias),
                *_norm_rules(f"{ours}.ln_2", f"{hf}.output.LayerNorm", cfg.bias),
            ]
        return (
            rules
            + _linear_rules("pooler", "bert.pooler.dense", cfg.bias)
            + _linear_rules("classifier", "classifier", cfg.bias)
        )


FAMILIES: dict[str, type[Family]] = {f.name: f for f in (GPT2, Llama, Bert)}
BY_ARCHITECTURE = {a: f for f in FAMILIES.values() for a in f.architectures}
OLD_NORM_NAMES = re.compile(r"\.(gamma|beta)$")  # LayerNorm weights in BERT's original files


def family_of(hf: dict[str, Any], source: str) -> type[Family]:
    """The family of a config.json: by its architectures, else its model_type; a one-line error naming the
    supported ones otherwise."""
    for arch in hf.get("architectures") or []:
        if arch in BY_ARCHITECTURE:
            return BY_ARCHITECTURE[arch]
    names = hf.get("architectures") or [hf.get("model_type")]
    if not hf.get("architectures") and hf.get("model_type") in FAMILIES:
        return FAMILIES[hf["model_type"]]
    raise ConfigError(
        f"{source}: architecture {', '.join(map(str, names))} is not supported; llmscratch loads "
        f"{', '.join(BY_ARCHITECTURE)}"
    )


def family_for(cfg: ModelConfig) -> type[Family]:
    """The family a model of ``cfg`` is saved as; a one-line error saying what each family needs."""
    for family in FAMILIES.values():
        if not family.problems(cfg):
            return family
    reasons = "; ".join(
        f"{f.architectures[0]} needs {f.needs} (this model has {', '.join(f.problems(cfg))})" for f in FAMILIES.values()
    )
    raise ConfigError(f"this {cfg.kind} model has no Hugging Face counterpart: {reasons}")
