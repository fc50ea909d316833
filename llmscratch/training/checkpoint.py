"""Checkpoints: a directory of safetensors and JSON, never pickle, never half-written.

    out_dir/
      LATEST                       the name of the current checkpoint, replaced atomically
      metrics.jsonl                the run's history as it happens, one line per entry (metrics_log.py)
      ckpt-000500-1a2b3c/          one complete checkpoint:
        model.safetensors            parameters (bfloat16 via ml_dtypes; a mixed-precision run's float32 masters)
        optimizer.safetensors        AdamW's m and v
        config.json                  the TrainConfig, the ModelConfig (kind: gpt | encoder | seq2seq) and the
                                     task's own data (the label set of a classifier)
        tokenizer.json
        state.json                   step, optimizer step count, history, format version (and fp16's loss scaler)

A checkpoint is written whole into a hidden temporary directory, renamed to its final name, and only then
named by LATEST; older checkpoints are removed after that. A crash at any moment leaves LATEST naming a
complete checkpoint. ``load`` accepts out_dir (follows LATEST), a checkpoint directory itself, or a Hugging
Face model directory (llmscratch.interop.hf: GPT-2, Llama, BERT), which loads as a checkpoint at step 0 with
no optimizer state; ``save_hf`` writes one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, get_backend
from ..interop.hf import is_hf_dir, read_hf, write_hf
from ..kernels import fit_to_backend
from ..models import Model, ModelConfig, model_class
from ..tasks import Task, task_class, task_for_kind
from ..tasks.uses import UsesModel
from ..tokenizers import Tokenizer, from_json_dict
from ..util.atomic import atomic_write, require_empty, write_directory
from ..util.errors import CheckpointError, ConfigError, LLMScratchError
from ..util.tensors import read_safetensors, tensors_to_bytes
from .config import TrainConfig

FORMAT_VERSION = 2
POINTER = "LATEST"
FILES = ("model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json", "state.json")


def _checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory itself, or the one named by path/LATEST."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the directory does not exist (train first, or check the path)")
    if (path / POINTER).is_file():
        name = (path / POINTER).read_text().strip()
        target = path / name
        if not target.is_dir():
            raise CheckpointError(
                f"{path}/{POINTER} names {name!r}, which is missing; the output directory was altered"
            )
        return target
    if (path / "model.safetensors").is_file():
        return path
    raise CheckpointError(f"{path} holds no checkpoint (no {POINTER} file and no model.safetensors)")


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / POINTER).is_file()


def save_checkpoint(
    out_dir: str | os.PathLike,
    model: Model,
    tokenizer: Tokenizer,
    config: TrainConfig,
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    task_meta: dict[str, Any] | None = None,
    weights: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint under out_dir, then point LATEST at it. Returns its directory. ``weights``
    (default: the model's parameters) are what model.safetensors keeps: a mixed-precision run's float32 master
    weights."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    name = f"ckpt-{state['step']:06d}-{secrets.token_hex(3)}"
    bk = model.bk

    def fill(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(
            tensors_to_bytes(bk.to_host(model.params if weights is None else weights))
        )
        (tmp / "optimizer.safetensors").write_bytes(tensors_to_bytes(bk.to_host(optimizer_state["arrays"])))
        meta = {"train": config.to_dict(), "model": model.config.to_dict(), "task": task_meta or {}}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        full_state = {"format_version": FORMAT_VERSION, "optimizer_t": optimizer_state["t"], **state}
        (tmp / "state.json").write_text(json.dumps(full_state, indent=1))

    write_directory(out_dir / name, fill)
    atomic_write(out_dir / POINTER, name + "\n")
    for old in out_dir.glob("ckpt-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir / name


@dataclass
class Checkpoint(UsesModel):
    """What ``load`` returns: a ready model (the kind its task trains) and its tokenizer, plus what resuming
    needs. ``sample`` / ``classify`` / ``translate`` / ``evaluate`` use it (each checks the task)."""

    model: Model
    tokenizer: Tokenizer
    config: TrainConfig
    path: Path
    step: int
    state: dict[str, Any] = field(repr=False)
    optimizer_arrays: dict[str, Any] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)  # the task's own data (labels)
    fresh: list[str] = field(default_factory=list)  # weights a Hugging Face file lacked, drawn new (a head)
    task_runner: Task = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.task_runner = task_class(self.config.task)(self.config, self.tokenizer, self.meta)

    @property
    def task(self) -> str:
        return self.config.task


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt ({e})") from None


def load_train_config(path: str | os.PathLike) -> dict[str, Any]:
    """The TrainConfig values a checkpoint was trained with, without loading any weights."""
    train = _read_json(_checkpoint_dir(Path(path)) / "config.json").get("train")
    if not isinstance(train, dict):
        raise CheckpointError(f"{path}: config.json has no training config")
    return train


def load(
    path: str | os.PathLike, backend: str | Backend | None = None, device: str | None = None, dtype: str | None = None
) -> Checkpoint:
    """Load a checkpoint, or a Hugging Face model directory, onto a backend (by default the one it was
    trained on; numpy, float32 for a Hugging Face directory). The model comes in evaluation mode (dropout
    off), as transformers' from_pretrained gives it; set ``model.training = True`` to train it by hand."""
    if is_hf_dir(path):
        return _load_hf(Path(path), backend, device, dtype)
    ckpt = _checkpoint_dir(Path(path))
    meta = _read_json(ckpt / "config.json")
    state = _read_json(ckpt / "state.json")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt} has checkpoint format {state.get('format_version')}, this llmscratch reads {FORMAT_VERSION}"
        )
    try:
        train_cfg = TrainConfig(**meta["train"])
        model_cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, LLMScratchError) as e:
        raise CheckpointError(f"{ckpt}/config.json does not describe a model this version can build ({e})") from None
    tokenizer = from_json_dict(_read_json(ckpt / "tokenizer.json"), str(ckpt / "tokenizer.json"))
    task_meta = meta.get("task", {})
    expected = task_class(train_cfg.task)(train_cfg, tokenizer, task_meta).model_vocab_size
    if expected != model_cfg.vocab_size:
        raise CheckpointError(
            f"{ckpt}: the tokenizer gives {expected} token ids but the model has {model_cfg.vocab_size}; "
            "the files come from different runs"
        )
    bk = _backend(train_cfg, backend, device, dtype)
    model = _model(bk, train_cfg, model_cfg, _read_tensors(ckpt / "model.safetensors"), f"{ckpt}/model.safetensors")
    opt_arrays = bk.from_host(_read_tensors(ckpt / "optimizer.safetensors"))
    return Checkpoint(model, tokenizer, train_cfg, ckpt, int(state["step"]), state, opt_arrays, task_meta)


def _load_hf(path: Path, backend: str | Backend | None, device: str | None, dtype: str | None) -> Checkpoint:
    hf = read_hf(path)
    task = task_for_kind(hf.config.kind).name
    train_cfg = TrainConfig(task=task, tokenizer=str(path), **hf.config.architecture_dict())
    bk = _backend(train_cfg, backend, device, dtype)
    model = _model(bk, train_cfg, hf.config, hf.tensors, str(path))
    state = {"step": 0, "history": [], "optimizer_t": 0, "source": hf.family.architectures[0]}
    return Checkpoint(model, hf.tokenizer, train_cfg, path, 0, state, {}, hf.meta, hf.fresh)  # type: ignore[arg-type]


def _backend(train_cfg: TrainConfig, backend: str | Backend | None, device: str | None, dtype: str | None) -> Backend:
    """The backend named here (on the device named here), else the checkpoint's own."""
    if isinstance(backend, Backend):
        return backend
    return get_backend(
        backend or train_cfg.backend, device if backend else (device or train_cfg.device), dtype or train_cfg.dtype
    )


def _model(bk: Backend, train_cfg: TrainConfig, model_cfg: ModelConfig, host: dict[str, Any], source: str) -> Model:
    attention, op_set = fit_to_backend(train_cfg.attention, train_cfg.ops, bk, model_cfg.block_size)
    try:
        params = bk.from_host(host)
        model = model_class(model_cfg.kind)(model_cfg, bk, params=params, attention=attention, ops=op_set)
    except LLMScratchError as e:
        raise CheckpointError(f"{source} does not match its config: {e}") from None
    model.training = False
    return model


def save_hf(model: Any, path: str | os.PathLike, tokenizer: Tokenizer | None = None) -> Path:
    """Write a model (or a checkpoint, or a training result, with its tokenizer and labels) as a Hugging
    Face directory that ``transformers``' ``from_pretrained`` loads: GPT2LMHeadModel, LlamaForCausalLM or
    BertForSequenceClassification, whichever the architecture is (a one-line error if none is). Weights
    keep the model's dtype; safetensors only."""
    if isinstance(model, Model):
        net, meta = model, {}
    else:
        net, meta = model.model, model.task_runner.meta()
        tokenizer = tokenizer or model.tokenizer
    return write_hf(path, net.config, net.bk.to_host(net.params), tokenizer, meta)


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str, dtype: str | None = None) -> Path:
    """A checkpoint or Hugging Face directory written in the other format: ``to`` "hf" (save_hf) or
    "llmscratch" (a checkpoint at step 0, no optimizer state, for --init-from or sample). dst must be new or
    empty; it is written whole or not at all."""
    if to not in ("hf", "llmscratch"):
        raise ConfigError(f"convert --to must be hf or llmscratch, got {to!r}")
    ck = load(src, backend="numpy", dtype=dtype)
    if to == "hf":
        return save_hf(ck, dst)
    if ck.tokenizer is None:
        raise CheckpointError(f"{src} has no tokenizer files; a llmscratch checkpoint needs one (add tokenizer.json)")
    require_empty(dst)
    config = replace(ck.config, backend="numpy", device=None, dtype=ck.model.bk.dtype_name)
    state = {"step": 0, "history": [], "converted_from": str(src)}
    return save_checkpoint(dst, ck.model, ck.tokenizer, config, {"t": 0, "arrays": {}}, state, ck.task_runner.meta())


def grow_vocabulary(bk: Backend, params: dict[str, Any], specs: dict[str, Any], source: str) -> dict[str, Any]:
    """A trained model's weights for a model with more token ids (chat tokens added): each weight with
    fewer rows than its spec (the token embedding, an untied LM head) gets new rows equal to the mean of
    its rows, so a new token starts as an average token. Any other difference is a one-line error."""
    out = {}
    for name, (shape, _) in specs.items():
        if name not in params:
            raise CheckpointError(f"{source} has no weight {name!r}; it is not the model this run trains")
        p = params[name]
        have = tuple(p.shape)
        if have != tuple(shape):
            if have[1:] != tuple(shape[1:]) or have[0] > shape[0]:
                raise CheckpointError(f"{source}: weight {name!r} is {have}, the model needs {tuple(shape)}")
            mean = bk.xp.mean(p, axis=0, keepdims=True)
            p = bk.xp.concat([p, bk.xp.broadcast_to(mean, (shape[0] - have[0], *have[1:]))], axis=0)
        out[name] = p
    return out


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_safetensors(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete") from None
