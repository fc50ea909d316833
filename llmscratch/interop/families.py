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


REQUIRED = object()  # a Field's default: config.json must have it


@dataclass(frozen=True)
class Field:
    """One row of a family's config table: our ModelConfig field ``ours`` is config.json's ``theirs``.

    ours     the ModelConfig field set when loading; None: a field of theirs alone
    theirs   config.json's key; None: ours has one value in every model of this family (``default``)
    default  theirs' value when config.json lacks it or holds null (REQUIRED: it must be there); with theirs
             None, the one value ours has
    read     their value -> ours, where the two differ (an activation's name); a value not in it is refused
             when loading. None: the value as it is
    write    our value -> theirs; a value not in it stops a model from being saved as this family. None: the
             value as it is
    saved    the ModelConfig attribute that is saved (and checked), where it is not ``ours``: a property
             derived from fields (``hidden``, ``kv_heads``, ``has_final_norm``)
    checked  with theirs None: whether a model must have ``default`` to be saved as this family (False: loading
             sets it, and a model without it is saved with zeros there, see ``Family.full_config``)
    """

    ours: str | None
    theirs: str | None
    default: Any = REQUIRED
    read: dict[Any, Any] | None = None
    write: dict[Any, Any] | None = None
    saved: str | None = None
    checked: bool = True

    @property
    def attribute(self) -> str | None:
        return self.saved or self.ours

    def load(self, hf: dict[str, Any]) -> tuple[Any, str | None]:
        """config.json -> (our value, None), or (None, what llmscratch does not build)"""
        if self.theirs is None:
            return self.default, None
        value = hf.get(self.theirs)
        if value is None:
            if self.default is REQUIRED:
                raise ConfigError(f"{self.theirs!r} is missing, and it has no default: set it in config.json")
            value = self.default
        if self.read is None:
            return value, None
        if value not in self.read:
            return None, f"{self.theirs} {value!r} (supported: {', '.join(map(repr, self.read))})"
        return self.read[value], None

    def save(self, cfg: ModelConfig) -> Any:
        """cfg -> config.json's value"""
        value = self.default if self.attribute is None else getattr(cfg, self.attribute)
        return value if self.write is None else self.write[value]

    def problem(self, cfg: ModelConfig) -> str | None:
        """ "name=value" when cfg cannot be saved as this family because of this row, else None"""
        if self.attribute is None:
            return None
        value = getattr(cfg, self.attribute)
        fits = value in self.write if self.write is not None else (self.theirs is not None or value == self.default)
        return None if fits or not self.checked else f"{self.attribute}={value}"

    def need(self) -> str | None:
        """what this row asks of a model, for errors ("pos=rope", "mlp=gelu|relu"), or None"""
        if self.write is not None:
            return f"{self.attribute}={'|'.join(map(str, self.write))}"
        if self.theirs is None and self.checked:
            return f"{self.attribute}={self.default}"
        return None


def decoder_only(pos: str, norm: str) -> tuple[Field, ...]:
    """What GPT-2 and Llama share: a GPT, pre-LN with a final norm, no token types, no embedding norm, and
    their own positions and norm."""
    return (
        Field("pos", None, pos),
        Field("norm", None, norm),
        Field("kind", None, "gpt"),
        Field("norm_first", None, True),
        Field(None, None, True, saved="has_final_norm"),
        Field("type_vocab_size", None, 0),
        Field("embed_norm", None, False),
    )


# our field -> its name in config.json's rope_parameters (rope_scaling before transformers 5)
ROPE_SCALING = {
    "rope_type": "rope_type",
    "rope_factor": "factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_context": "original_max_position_embeddings",
}

ACTIVATIONS = {  # their activation -> our mlp
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
}
HF_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}  # our mlp -> the name we write
ONLY = {False: None}  # a flag of theirs llmscratch builds only unset


class Family:
    """One Hugging Face architecture family: its names, its config table, its weight rules."""

    name: ClassVar[str]  # model_type in config.json
    architectures: ClassVar[tuple[str, ...]]  # the classes whose files it reads; the first is what it writes
    base_prefix: ClassVar[str]  # the base model's name prefix inside the head model
    heads: ClassVar[tuple[str, ...]]  # names outside the base model (head weights)
    ignored: ClassVar[str] = ""  # a regex of names in files that are not weights (buffers) or heads not used
    fields: ClassVar[tuple[Field, ...]]  # the config table

    @classmethod
    def canonical_name(cls, name: str) -> str:
        """A file's tensor name as the head model names it (the base prefix added where it lacks)."""
        if name.startswith(cls.base_prefix) or any(name.startswith(h) for h in cls.heads):
            return name
        return cls.base_prefix + name

    @classmethod
    def architecture(cls, hf: dict[str, Any]) -> dict[str, Any]:
        """config.json -> ModelConfig fields; a one-line error for what llmscratch does not build"""
        ours: dict[str, Any] = {}
        lacking: list[str] = []
        for field in cls.fields:
            value, why = field.load(hf)
            if why:
                lacking.append(why)
            elif field.ours is not None:
                ours[field.ours] = value
        ours.update(cls.more_architecture(hf, lacking))
        if lacking:
            raise ConfigError(f"this {cls.name} config uses what llmscratch does not build: {'; '.join(lacking)}")
        return ours

    @classmethod
    def more_architecture(cls, hf: dict[str, Any], lacking: list[str]) -> dict[str, Any]:
        """The fields one row cannot say (several of theirs make one of ours); appends to ``lacking``."""
        return {}

    @classmethod
    def hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        """ModelConfig (as ``full_config`` makes it) -> config.json's fields"""
        return {f.theirs: f.save(cfg) for f in cls.fields if f.theirs is not None} | cls.more_hf_config(cfg, meta)

    @classmethod
    def more_hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def problems(cls, cfg: ModelConfig) -> list[str]:
        """What stops a model of ``cfg`` from being this family (empty: it can be saved as one)."""
        full = cls.full_config(cfg)
        return [p for f in cls.fields if (p := f.problem(full))]

    @classmethod
    def needs(cls) -> str:
        """What a model must be to be saved as this family, for errors."""
        return ", ".join(n for f in cls.fields if (n := f.need()))

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
    fields = (
        *decoder_only(pos="learned", norm="layernorm"),
        Field(None, None, False, saved="grouped_query"),
        Field("bias", None, True, checked=False),
        Field("vocab_size", "vocab_size"),
        Field("block_size", "n_positions", 1024),
        Field("n_layer", "n_layer"),
        Field("n_head", "n_head"),
        Field("n_embd", "n_embd"),
        Field("n_inner", "n_inner", None),
        Field("mlp", "activation_function", "gelu_new", read=ACTIVATIONS, write=HF_ACTIVATION),
        Field("norm_eps", "layer_norm_epsilon", 1e-5),
        Field("tie_embeddings", "tie_word_embeddings", True),
        Field("dropout", "resid_pdrop", 0.0),
        Field(None, "embd_pdrop", saved="dropout"),
        Field(None, "attn_pdrop", 0.0),
        Field(None, "scale_attn_by_inverse_layer_idx", False, read=ONLY),
        Field(None, "scale_attn_weights", True, read={True: None}),
        Field(None, "add_cross_attention", False, read=ONLY),
    )

    @classmethod
    def full_config(cls, cfg: ModelConfig) -> ModelConfig:
        return replace(cfg, bias=True, mlp_bias=None)

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
    fields = (
        *decoder_only(pos="rope", norm="rmsnorm"),
        Field("mlp", "hidden_act", "silu", read={"silu": "swiglu"}, write={"swiglu": "silu"}),
        Field("vocab_size", "vocab_size"),
        Field("block_size", "max_position_embeddings", 2048),
        Field("n_layer", "num_hidden_layers"),
        Field("n_head", "num_attention_heads"),
        Field("n_kv_head", "num_key_value_heads", None, saved="kv_heads"),
        Field("n_embd", "hidden_size"),
        Field("n_inner", "intermediate_size", saved="hidden"),
        Field(None, "head_dim", None, saved="head_dim"),
        Field("norm_eps", "rms_norm_eps", 1e-6),
        Field("bias", "attention_bias", False),
        Field(None, "mlp_bias", False, saved="has_mlp_bias"),
        Field("tie_embeddings", "tie_word_embeddings", False),
        Field("dropout", "attention_dropout", 0.0),
        Field(None, "pretraining_tp", 1, read={1: None}),
    )

    @classmethod
    def more_architecture(cls, hf: dict[str, Any], lacking: list[str]) -> dict[str, Any]:
        """RoPE's parameters (in rope_parameters, or rope_scaling and rope_theta before transformers 5), a
        head_dim other than hidden_size / heads, the MLP's own bias flag."""
        rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            lacking.append(f"rope_type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
        heads, hidden = hf.get("num_attention_heads"), hf.get("hidden_size")
        if hf.get("head_dim") is not None and heads and hidden and hf["head_dim"] * heads != hidden:
            lacking.append(f"head_dim {hf['head_dim']} ≠ hidden_size / num_attention_heads")
        bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
        return {
            "rope_base": float(rope.get("rope_theta", hf.get("rope_theta") or 10000.0)),
            **{ours: rope[theirs] for ours, theirs in ROPE_SCALING.items() if theirs in rope},
            "mlp_bias": None if mlp_bias == bias else mlp_bias,
        }

    @classmethod
    def more_hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        rope = {theirs: getattr(cfg, ours) for ours, theirs in ROPE_SCALING.items() if ours in cfg.rope_fields()}
        return {"rope_theta": cfg.rope_base, "rope_parameters": {"rope_theta": cfg.rope_base, **rope}}

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
    fields = (
        Field("kind", None, "encoder"),
        Field("norm_first", None, False),
        Field(None, None, False, saved="has_final_norm"),
        Field("pos", None, "learned"),
        Field("norm", None, "layernorm"),
        Field("embed_norm", None, True),
        Field("pooler", None, True),
        Field("pooling", None, "cls"),
        Field(None, None, False, saved="grouped_query"),
        Field("bias", None, True, checked=False),
        Field("vocab_size", "vocab_size"),
        Field("block_size", "max_position_embeddings", 512),
        Field("n_layer", "num_hidden_layers"),
        Field("n_head", "num_attention_heads"),
        Field("n_embd", "hidden_size"),
        Field("n_inner", "intermediate_size", saved="hidden"),
        Field("mlp", "hidden_act", "gelu", read=ACTIVATIONS, write=HF_ACTIVATION),
        Field("norm_eps", "layer_norm_eps", 1e-12),
        Field("type_vocab_size", "type_vocab_size", 2),
        Field("dropout", "hidden_dropout_prob", 0.0),
        Field(None, "attention_probs_dropout_prob", saved="dropout"),
        Field(None, "position_embedding_type", "absolute", read={"absolute": None}),
        Field(None, "is_decoder", False, read=ONLY),
    )

    @classmethod
    def more_architecture(cls, hf: dict[str, Any], lacking: list[str]) -> dict[str, Any]:
        """The classes: as many as id2label names (else num_labels), single-label classification only."""
        problem = hf.get("problem_type")
        if problem not in (None, "single_label_classification"):
            lacking.append(f"problem_type {problem!r} (supported: single_label_classification)")
        labels = hf.get("id2label") or {}
        n_classes = len(labels) if labels else hf.get("num_labels") or 2
        if n_classes == 1:
            lacking.append("num_labels 1 (regression)")
        return {"n_classes": n_classes}

    @classmethod
    def full_config(cls, cfg: ModelConfig) -> ModelConfig:
        return replace(cfg, bias=True, mlp_bias=None, type_vocab_size=max(cfg.type_vocab_size, 1))

    @classmethod
    def more_hf_config(cls, cfg: ModelConfig, meta: dict[str, Any]) -> dict[str, Any]:
        labels = meta.get("labels") or [f"LABEL_{i}" for i in range(cfg.n_classes)]
        return {
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
        f"{f.architectures[0]} needs {f.needs()} (this model has {', '.join(f.problems(cfg))})"
        for f in FAMILIES.values()
    )
    raise ConfigError(f"this {cfg.kind} model has no Hugging Face counterpart: {reasons}")
