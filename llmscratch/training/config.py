"""The training configuration: one flat dataclass with nanoGPT's field names (the model's fields are
inherited from ``Architecture``, written once there), presets in TOML.

A run's values come from, in increasing priority: the defaults below, the checkpoint's own config when
resuming, a preset (``llmscratch/training/presets/*.toml``),
a TOML file of the user's, and explicit overrides (keyword arguments or ``--kebab-case`` CLI flags).
The defaults are nanoGPT's README CPU run, on the embedded default corpus.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args, get_type_hints

from ..backends.distributed import check_dist_backend
from ..models.config import ARCHITECTURE_FIELDS, LORA_FIELDS, Architecture, ModelConfig, check_float
from ..tasks import task_class
from ..tasks.rewards import reward_function
from ..util.errors import ConfigError, did_you_mean
from ..util.reading import read_text
from .precision import check_precision

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"


TRAIN_ON = ("assistant", "last", "all")  # sft: which targets the loss counts


@dataclass
class TrainConfig(Architecture):
    """The model's fields (``Architecture``, defaults and checks included) plus how to train it."""

    task: str = "lm"  # a name in llmscratch.tasks.TASKS: what is trained, on which data (`llmscratch train --help`)
    init_from: str | None = None  # a checkpoint whose weights (and tokenizer, and shape) start the run
    train_on: str = "assistant"  # sft: the targets the loss counts: assistant | last | all
    packing: bool = False  # sft: conversations packed into block_size windows instead of padded
    dpo_beta: float = 0.1  # dpo: β, how far the rewards β·(log π − log π_ref) may move from the reference
    dpo_smoothing: float = 0.0  # dpo: label smoothing ε in [0, 0.5), for preferences that are sometimes wrong
    reward: str = "exact"  # rl: exact | number | regex:PATTERN (a Python function: train(reward=fn))
    rl_group: int = 4  # rl: replies sampled per prompt, whose rewards are compared with each other
    rl_max_new_tokens: int = 16  # rl: the longest reply sampled
    rl_temperature: float = 1.0  # rl: the sampling temperature
    rl_top_k: int | None = None  # rl: sample among the k most likely tokens only
    rl_top_p: float | None = None  # rl: sample among the tokens whose probability reaches p
    rl_normalize: bool = True  # rl: divide each group's advantages by its standard deviation
    rl_kl: float = 0.0  # rl: β of the penalty for drifting from the reference (0: none, and no reference kept)
    # data and tokenizer
    data: str = "stdlib"  # what the task reads (its `data` in llmscratch.tasks.TASKS); lm: stdlib | shakespeare | ...
    tokenizer: str = "char"  # char | bpe | path to a saved tokenizer JSON
    vocab_size: int | None = None  # the BPE vocabulary to train (tokenizer="bpe")
    line_documents: bool | None = None  # lm: one item per line, shuffled, newline-ended (None: yes for names)
    # where it runs
    backend: str = "numpy"  # numpy | torch | cupy | jax | strict, or a plugin's
    device: str | None = None  # cpu | cuda | cuda:N (None: the backend's default)
    dtype: str = "float32"  # float32 | float64 | bfloat16 (torch) | float16 (torch, cupy): the weights' dtype
    precision: str = "fp32"  # fp32 | bf16 | fp16: compute in 16 bits on float32 master weights (precision.py)
    attention: str = "auto"  # an attention kernel name, or auto: the measured best for the backend
    ops: str = "auto"  # array-api | cpu-fused (C++ kernels, CPU) | auto: cpu-fused where it compiles
    compile: bool = False  # jax: each step (forward, backward, AdamW) one XLA program per batch shape
    dist_backend: str = "auto"  # under torchrun: gloo (host arrays) | nccl (GPU arrays) | auto: by the device
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
    eval_iters: int = 20  # lm: batches per estimate; classify/seq2seq evaluate the whole validation split
    log_interval: int = 10  # steps between reading the loss back from the device
    out_dir: str | None = None  # where checkpoints go; None: keep none (the CLI defaults to ./out)
    keep_checkpoints: int = 2  # the newest checkpoints kept: an older one stays if the newest is damaged
    check_memory: bool = True  # refuse a run whose estimated memory exceeds what the device has free
    stop_timeout: float = 30.0  # seconds a step may still run after Ctrl-C / SIGTERM before the run exits at once
    tensorboard: bool = False  # also write TensorBoard event files to out_dir/tensorboard (pip install tensorboard)
    seed: int = 1337

    def __post_init__(self) -> None:
        _check_types(self)  # before the model's checks, so a wrong type is named as such
        super().__post_init__()
        task_class(self.task)  # a known task, else a one-line error that lists them
        if self.train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {self.train_on!r}")
        for name in (
            "batch_size",
            "gradient_accumulation_steps",
            "eval_interval",
            "eval_iters",
            "log_interval",
            "keep_checkpoints",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_float("min_lr", self.min_lr, 0.0)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("beta1", self.beta1, 0.0, 1.0)
        check_float("beta2", self.beta2, 0.0, 1.0)
        check_float("grad_clip", self.grad_clip, 0.0)
        check_float("stop_timeout", self.stop_timeout, 0.0, low_open=True)
        check_float("dpo_beta", self.dpo_beta, 0.0, low_open=True)
        check_float("dpo_smoothing", self.dpo_smoothing, 0.0, 0.5)
        reward_function(self.reward)
        if self.rl_group < 2:
            raise ConfigError(f"rl_group must be at least 2 (replies compared with each other), got {self.rl_group}")
        if self.rl_max_new_tokens < 1:
            raise ConfigError(f"rl_max_new_tokens must be at least 1, got {self.rl_max_new_tokens}")
        check_float("rl_temperature", self.rl_temperature, 0.0, low_open=True)
        check_float("rl_kl", self.rl_kl, 0.0)
        check_dist_backend(self.backend, self.device, self.dist_backend)
        check_precision(self.precision, self.backend, self.dtype)
        if self.tokenizer == "bpe" and self.vocab_size is None:
            raise ConfigError("tokenizer='bpe' needs a vocab_size (e.g. --vocab-size 1024)")

    @property
    def kind(self) -> str:
        """The model kind the task trains: gpt | encoder | seq2seq."""
        return task_class(self.task).kind

    def model_config(self, vocab_size: int, **sizes: int | None) -> ModelConfig:
        """The architecture with the sizes the data decides (vocab_size; n_classes, src_vocab_size)."""
        return ModelConfig(kind=self.kind, vocab_size=vocab_size, **sizes, **self.architecture())

    def architecture(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    def with_architecture_of(self, model: Architecture, source: str) -> TrainConfig:
        """This config with a pretrained model's architecture (``init_from``). A field set here to something
        else than its default must agree with the model's, else a one-line error; dropout may change,
        block_size may shrink (a learned position table is cropped, as nanoGPT's crop_block_size does), and a
        model without LoRA adapters may get them."""
        defaults = TrainConfig.__dataclass_fields__
        asked = {n: getattr(self, n) for n in ARCHITECTURE_FIELDS if getattr(self, n) != defaults[n].default}
        may_change = {"dropout": lambda v: True, "block_size": lambda v: v <= model.block_size}
        may_change |= {n: lambda v: not model.lora for n in LORA_FIELDS}  # adapters added to a model without
        clash = [
            f"{n}={v} (it has {getattr(model, n)})"
            for n, v in asked.items()
            if getattr(model, n) != v and not may_change.get(n, lambda v: False)(v)
        ]
        if clash:
            raise ConfigError(f"--init-from {source}: the model keeps its shape; drop {', '.join(clash)}")
        return replace(self, **{n: getattr(model, n) for n in ARCHITECTURE_FIELDS if n not in asked})

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
        values = tomllib.loads(read_text(path, ConfigError))
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"{path} is not valid TOML: {str(e) or 'nested too deeply'}") from None
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
