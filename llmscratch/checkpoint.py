"""Checkpoints: a directory of safetensors and JSON, never pickle, never half-written.

    out_dir/
      LATEST                       the name of the current checkpoint, replaced atomically
      ckpt-000500-1a2b3c/          one complete checkpoint:
        model.safetensors            parameters (bfloat16 via ml_dtypes)
        optimizer.safetensors        AdamW's m and v
        config.json                  the TrainConfig, the ModelConfig (kind: gpt | encoder | seq2seq) and the
                                     task's own data (the label set of a classifier)
        tokenizer.json
        state.json                   step, optimizer step count, history, format version

A checkpoint is written whole into a hidden temporary directory, renamed to its final name, and only then
named by LATEST; older checkpoints are removed after that. A crash at any moment leaves LATEST naming a
complete checkpoint. ``load`` accepts out_dir (follows LATEST) or a checkpoint directory itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from .atomic import atomic_write
from .backends import Backend, get_backend
from .config import TrainConfig
from .errors import CheckpointError, LLMScratchError
from .inference import UsesModel
from .kernels import fit_to_backend
from .models import Model, ModelConfig, model_class
from .tasks import TASK_CLASSES, Task
from .tokenizers import Tokenizer, from_json_dict

FORMAT_VERSION = 2
POINTER = "LATEST"
FILES = ("model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json", "state.json")
SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
}


def tensors_to_bytes(bk: Backend, arrays: dict[str, Any]) -> bytes:
    host = {}
    for name, a in arrays.items():
        value = bk.to_numpy(a)
        host[name] = value.astype(ml_dtypes.bfloat16) if bk.dtype_name == "bfloat16" else value
    return safetensors.numpy.save(host)


def tensors_from_bytes(data: bytes, source: str) -> dict[str, np.ndarray]:
    """safetensors bytes -> NumPy arrays (bfloat16 too, which safetensors.numpy cannot read back)."""
    try:
        items = safetensors.deserialize(data)
    except Exception as e:  # SafetensorError: truncated, bad header, ...
        raise CheckpointError(f"{source} is corrupt ({e}); resume from another checkpoint or retrain") from None
    out = {}
    for name, info in items:
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{source}: tensor {name} has unsupported dtype {info['dtype']}")
        out[name] = np.frombuffer(bytes(info["data"]), dtype=dtype).reshape(info["shape"])
    return out


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
) -> Path:
    """Write a complete checkpoint under out_dir, then point LATEST at it. Returns its directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    name = f"ckpt-{state['step']:06d}-{secrets.token_hex(3)}"
    tmp = out_dir / f".tmp-{name}"
    tmp.mkdir()
    bk = model.bk
    (tmp / "model.safetensors").write_bytes(tensors_to_bytes(bk, model.params))
    (tmp / "optimizer.safetensors").write_bytes(tensors_to_bytes(bk, optimizer_state["arrays"]))
    meta = {"train": config.to_dict(), "model": model.config.to_dict(), "task": task_meta or {}}
    (tmp / "config.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
    full_state = {"format_version": FORMAT_VERSION, "optimizer_t": optimizer_state["t"], **state}
    (tmp / "state.json").write_text(json.dumps(full_state, indent=1))
    for f in FILES:
        with open(tmp / f, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(tmp, out_dir / name)
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
    task_runner: Task = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.task_runner = TASK_CLASSES[self.config.task](self.config, self.tokenizer, self.meta)

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
    """Load a checkpoint onto a backend (by default the one it was trained on)."""
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
    expected = TASK_CLASSES[train_cfg.task](train_cfg, tokenizer, task_meta).model_vocab_size
    if expected != model_cfg.vocab_size:
        raise CheckpointError(
            f"{ckpt}: the tokenizer gives {expected} token ids but the model has {model_cfg.vocab_size}; "
            "the files come from different runs"
        )
    if isinstance(backend, Backend):
        bk = backend
    else:  # a backend named here runs on the device named here; else both come from the checkpoint
        bk = get_backend(
            backend or train_cfg.backend, device if backend else (device or train_cfg.device), dtype or train_cfg.dtype
        )
    attention, op_set = fit_to_backend(train_cfg.attention, train_cfg.ops, bk, model_cfg.block_size)
    try:
        params = _read_tensors(bk, ckpt / "model.safetensors")
        model = model_class(model_cfg.kind)(model_cfg, bk, params=params, attention=attention, ops=op_set)
    except LLMScratchError as e:
        raise CheckpointError(f"{ckpt}/model.safetensors does not match its config: {e}") from None
    opt_arrays = _read_tensors(bk, ckpt / "optimizer.safetensors")
    return Checkpoint(model, tokenizer, train_cfg, ckpt, int(state["step"]), state, opt_arrays, task_meta)


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


def _read_tensors(bk: Backend, path: Path) -> dict[str, Any]:
    """A safetensors file -> arrays on bk in its dtype (bfloat16 goes through float64 on the host)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete") from None
    host = tensors_from_bytes(data, str(path))
    return {
        n: bk.from_numpy(a.astype(np.float64) if a.dtype == ml_dtypes.bfloat16 else a, bk.dtype)
        for n, a in host.items()
    }
