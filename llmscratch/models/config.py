"""The architecture: which model, its sizes and options. How it runs (backend, attention kernel, op set) is
not part of it, so one checkpoint runs anywhere.

``Architecture`` holds what a user chooses (nanoGPT's and Hugging Face's field names; the defaults are
nanoGPT's small CPU model); ``ModelConfig`` adds what the data decides (vocabulary and class counts) and the
kind of model. ``TrainConfig`` (llmscratch.training.config) extends ``Architecture`` with the training settings, so
every model field and default is written once, here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from ..layers import MLPS, NORMS, POOLINGS, POSITIONS
from ..layers.lora import parse_targets
from ..ops import ROPE_SCALINGS, ROPE_TYPES
from ..util.errors import ConfigError, did_you_mean

KINDS = ("gpt", "encoder", "seq2seq")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}{did_you_mean(value, choices)}; choose one of {', '.join(choices)}")


def check_float(name: str, value: float, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """value must be a finite number in [low, high) ((low, high) with low_open); NaN and infinities never pass."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value < high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g})"
        raise ConfigError(f"{name} must be a finite number in {bounds}, got {value}")


@dataclass
class Architecture:
    n_layer: int = 4  # blocks (the encoder's, for encoder and seq2seq)
    n_head: int = 4
    n_kv_head: int | None = None  # None: = n_head; fewer gives grouped-query attention
    n_embd: int = 128
    n_inner: int | None = None  # MLP width F; None: 4·n_embd
    block_size: int = 64  # the longest sequence (context) the model sees
    dropout: float = 0.0
    bias: bool = False  # biases in the linear layers and layernorms
    tie_embeddings: bool = True  # the output head reuses the (decoder's) token embedding
    pos: str = "learned"  # learned | sinusoidal | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu (tanh form, GPT-2's) | gelu_exact | relu | swiglu
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rope_type: str = "default"  # default | linear | llama3: RoPE frequencies rescaled for a longer context
    rope_factor: float = 1.0  # linear, llama3: how many times longer
    rope_low_freq_factor: float = 1.0  # llama3: wavelengths beyond original_context / this are stretched
    rope_high_freq_factor: float = 4.0  # llama3: wavelengths below original_context / this are kept
    rope_original_context: int = 8192  # llama3: the context the model was first trained at
    norm_first: bool = True  # pre-LN (GPT-2); False: post-LN "Add & Norm" (BERT, the 2017 paper)
    final_norm: bool | None = None  # a norm after the last block of each stack; None: = norm_first
    n_decoder_layer: int | None = None  # seq2seq: decoder blocks; None: = n_layer
    pooling: str = "cls"  # encoder classifier: cls (the first token) | mean (over unpadded tokens)
    pooler: bool = False  # encoder classifier: a tanh(dense) layer on the pooled vector (BERT's pooler)
    type_vocab_size: int = 0  # token-type (segment) embeddings added to the input (BERT's); 0: none
    embed_norm: bool = False  # a norm of the summed embeddings before the first block (BERT's)
    mlp_bias: bool | None = None  # biases in the MLP's linear layers; None: = bias (Llama sets them apart)
    lora_rank: int | None = None  # LoRA adapters of this rank on lora_targets, every other weight frozen; None: none
    lora_alpha: float = 16.0  # LoRA: the adapters' output is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0  # LoRA: dropout on the adapters' input, in training
    lora_targets: str = "q,v"  # LoRA: the projections adapted, comma-separated among q,k,v,o,gate,up,down

    def __post_init__(self) -> None:
        check_choice("pos", self.pos, POSITIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("mlp", self.mlp, MLPS)
        check_choice("pooling", self.pooling, POOLINGS)
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size must be 0 (no token types) or more, got {self.type_vocab_size}")
        for name in ("n_kv_head", "n_inner", "n_decoder_layer"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer or None, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.kv_heads:
            raise ConfigError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.kv_heads})")
        if self.pos == "rope" and self.head_dim % 2:
            raise ConfigError(f"pos='rope' needs an even head dim, got n_embd/n_head = {self.head_dim}")
        if self.pos == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"pos='sinusoidal' needs an even n_embd, got {self.n_embd}")
        check_float("dropout", self.dropout, 0.0, 1.0)
        check_float("norm_eps", self.norm_eps, 0.0, low_open=True)
        check_float("rope_base", self.rope_base, 1.0, low_open=True)
        check_choice("rope_type", self.rope_type, ROPE_TYPES)
        check_float("rope_factor", self.rope_factor, 1.0)
        check_float("rope_low_freq_factor", self.rope_low_freq_factor, 0.0, low_open=True)
        check_float("rope_high_freq_factor", self.rope_high_freq_factor, self.rope_low_freq_factor, low_open=True)
        if self.lora_rank is not None:
            if self.lora_rank < 1:
                raise ConfigError(
                    f"lora_rank must be a positive integer (the adapters' rank, e.g. 8), got {self.lora_rank}; "
                    "leave it out to train every weight"
                )
            check_float("lora_alpha", self.lora_alpha, 0.0, low_open=True)
            check_float("lora_dropout", self.lora_dropout, 0.0, 1.0)
            parse_targets(self.lora_targets)
        if self.rope_original_context < 1:
            raise ConfigError(f"rope_original_context must be a positive integer, got {self.rope_original_context}")

    @property
    def rope_scaling(self) -> dict[str, Any]:
        """The keyword arguments of ops.rope_frequencies (and rope_tables) beyond the base: the rope_type and
        the rope_<argument> fields it uses."""
        return {"rope_type": self.rope_type, **{k: getattr(self, f"rope_{k}") for k in ROPE_SCALINGS[self.rope_type]}}

    def rope_fields(self) -> tuple[str, ...]:
        """The rope_* fields this rope_type uses."""
        return ("rope_type", *(f"rope_{k}" for k in ROPE_SCALINGS[self.rope_type]))

    @property
    def lora(self) -> bool:
        """Whether the model has LoRA adapters (and trains only them)."""
        return self.lora_rank is not None

    @property
    def draws_masks(self) -> bool:
        """Whether training draws dropout masks (the model's dropout, or the LoRA adapters')."""
        return self.dropout > 0 or (self.lora and self.lora_dropout > 0)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def grouped_query(self) -> bool:
        """Whether each key/value head serves several query heads (n_kv_head < n_head)."""
        return self.kv_heads != self.n_head

    @property
    def hidden(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    @property
    def has_mlp_bias(self) -> bool:
        return self.bias if self.mlp_bias is None else self.mlp_bias

    @property
    def decoder_layers(self) -> int:
        return self.n_layer if self.n_decoder_layer is None else self.n_decoder_layer

    @property
    def has_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else self.final_norm


ARCHITECTURE_FIELDS = tuple(f.name for f in fields(Architecture))
LORA_FIELDS = tuple(n for n in ARCHITECTURE_FIELDS if n.startswith("lora_"))
ArchitectureT = TypeVar("ArchitectureT", bound=Architecture)


def without_lora(cfg: ArchitectureT) -> ArchitectureT:
    """cfg (a ModelConfig or TrainConfig) with the LoRA fields at their defaults: the same model, merged."""
    return replace(cfg, **{n: f.default for f in fields(Architecture) if (n := f.name) in LORA_FIELDS})


@dataclass
class ModelConfig(Architecture):
    """A whole model: ``kind`` gpt (decoder-only LM) | encoder (classifier) | seq2seq (encoder–decoder)."""

    kind: str = "gpt"
    vocab_size: int = 65  # the (target) vocabulary
    src_vocab_size: int | None = None  # seq2seq: the source vocabulary; None: shared with the target
    n_classes: int = 2  # encoder: the number of labels

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model kind", self.kind, KINDS)
        for name in ("vocab_size", "n_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.src_vocab_size is not None and self.src_vocab_size < 1:
            raise ConfigError(f"src_vocab_size must be a positive integer or None, got {self.src_vocab_size}")

    @property
    def init_depth(self) -> int:
        """L in the residual projections' init 0.02/√(2L): the deepest stack's blocks."""
        return max(self.n_layer, self.decoder_layers) if self.kind == "seq2seq" else self.n_layer

    @property
    def source_vocab(self) -> int:
        return self.vocab_size if self.src_vocab_size is None else self.src_vocab_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def architecture_dict(self) -> dict[str, Any]:
        """The fields a user chooses (``Architecture``'s), without what the data decides."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config key {unknown[0]!r}{did_you_mean(unknown[0], known)}")
        return cls(**d)


GPTConfig = ModelConfig  # kind="gpt" is the default: GPTConfig(vocab_size=65, n_layer=6, ...)
