"""The training configuration: one flat dataclass with nanoGPT's field names, presets in TOML.

A run's values come from, in increasing priority: the defaults below, the checkpoint's own config when
resuming, a preset (``llmscratch/presets/*.toml``),
a TOML file of the user's, and explicit overrides (keyword arguments or ``--kebab-case`` CLI flags).
The defaults are nanoGPT's README CPU run, on the embedded default corpus.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from .errors import ConfigError, did_you_mean
from .kernels import default_attention_kernel, default_ops
from .models.gpt import GPTConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class TrainConfig:
    # data and tokenizer
    data: str = "stdlib"  # stdlib | shakespeare | names | path to a UTF-8 text file
    tokenizer: str = "char"  # char | bpe | path to a saved tokenizer JSON
    vocab_size: int | None = None  # the BPE vocabulary to train (tokenizer="bpe")
    # where it runs
    backend: str = "numpy"  # numpy | torch | cupy | strict
    device: str | None = None  # cpu | cuda | cuda:N (None: the backend's default)
    dtype: str = "float32"  # float32 | float64 | bfloat16 (torch)
    # the model (see GPTConfig)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    n_embd: int = 128
    n_inner: int | None = None
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    tie_embeddings: bool = True
    pos: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    attention: str = "auto"  # an attention kernel name, or auto: the measured best for the backend
    ops: str = "auto"  # array-api | cpu-fused (C++ kernels, CPU) | auto: cpu-fused where it compiles
    # optimisation
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    decay_lr: bool = True
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10  # steps between reading the loss back from the device
    out_dir: str | None = None  # where checkpoints go; None: keep none (the CLI defaults to ./out)
    seed: int = 1337

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_iters < 0:
            raise ConfigError(f"max_iters must be >= 0, got {self.max_iters}")
        if self.learning_rate <= 0 or self.min_lr < 0:
            raise ConfigError("learning_rate must be > 0 and min_lr >= 0")
        if self.tokenizer == "bpe" and self.vocab_size is None:
            raise ConfigError("tokenizer='bpe' needs a vocab_size (e.g. --vocab-size 1024)")
        self.model_config(vocab_size=1)  # validates the model fields now, not after loading the data

    def model_config(self, vocab_size: int) -> GPTConfig:
        names = {f.name for f in fields(GPTConfig)} - {"vocab_size", "attention", "ops"}
        attention, ops = self.attention, self.ops
        if attention == "auto":
            attention = default_attention_kernel(self.backend, self.block_size, self.device, self.dtype)
        if ops == "auto":
            ops = default_ops(self.backend, self.device, self.dtype)
        return GPTConfig(vocab_size=vocab_size, attention=attention, ops=ops, **{n: getattr(self, n) for n in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}


def _check_types(cfg: TrainConfig) -> None:
    """A wrong type (e.g. n_layer = "4" in a TOML file) is a one-line error, not a crash later on."""
    for name, hint in get_type_hints(TrainConfig).items():
        value = getattr(cfg, name)
        allowed = get_args(hint) or (hint,)
        if value is None and type(None) in allowed:
            continue
        ok = any(
            (t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (t is int and isinstance(value, int) and not isinstance(value, bool))
            or (t in (bool, str) and isinstance(value, t))
            for t in allowed
        )
        if not ok:
            expected = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"{name} must be {expected}, got {value!r}")


def check_keys(values: dict[str, Any], source: str) -> None:
    for key in values:
        if key not in FIELDS:
            raise ConfigError(f"unknown config key {key!r} in {source}{did_you_mean(key, FIELDS)}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def read_toml(path: str | Path, source: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    check_keys(values, source or str(path))
    return values


def resolve_config(
    preset: str | None = None, config_file: str | None = None, base: dict[str, Any] | None = None, **overrides: Any
) -> TrainConfig:
    """defaults < base (a resumed run's config) < preset < config file < overrides (None overrides are ignored)."""
    values: dict[str, Any] = dict(base or {})
    if preset is not None:
        names = preset_names()
        if preset not in names:
            raise ConfigError(f"unknown preset {preset!r}{did_you_mean(preset, names)}; presets: {', '.join(names)}")
        values |= read_toml(PRESET_DIR / f"{preset}.toml", f"preset {preset}")
    if config_file is not None:
        values |= read_toml(config_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    check_keys(given, "the arguments")
    values |= given
    try:
        return TrainConfig(**values)
    except TypeError as e:
        raise ConfigError(f"invalid config: {e}") from None
