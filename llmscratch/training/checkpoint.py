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
        digests.json                 each file above: its size and SHA-256, computed from the bytes written
      ckpt-000250-9f8e7d/          the checkpoint before (keep_checkpoints: the newest 2 are kept)

A checkpoint is written whole into a hidden temporary directory, renamed to its final name, and only then
named by LATEST; checkpoints beyond the newest ``keep`` are removed after that. A crash at any moment leaves
LATEST naming a complete checkpoint. A run holds the directory's lock (llmscratch.util.dir_lock) while it
writes, so two runs never interleave their checkpoints; readers need no lock.

``load`` checks every file's size against digests.json, and its SHA-256 too unless ``verify=False`` (hashing
reads every byte once: see docs/faults-and-limits.md for its cost). A damaged file is a one-line error
naming it; ``load_newest_sound`` (``train --resume``) falls back to the newest checkpoint that verifies.

``load`` accepts out_dir (follows LATEST), a checkpoint directory itself, or a Hugging Face model directory
(llmscratch.interop.hf: GPT-2, Llama, BERT), which loads as a checkpoint at step 0 with no optimizer state;
``save_hf`` writes one.
"""

from __future__ import annotations

import hashlib
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
from ..models import Model, ModelConfig, lora, model_class, quantized
from ..models.config import without_lora
from ..tasks import Task, task_class, task_for_kind
from ..tasks.uses import UsesModel
from ..tokenizers import Tokenizer, from_json_dict
from ..util.atomic import atomic_write, require_empty, write_directory
from ..util.dir_lock import DirectoryLock
from ..util.errors import CheckpointError, ConfigError, LLMScratchError
from ..util.reading import malformed, read_json, read_text
from ..util.tensors import read_safetensors, tensors_to_bytes
from .config import TrainConfig

FORMAT_VERSION = 3
READABLE_FORMATS = (2, 3)  # format 2: written before digests.json, so only parsed, not verified
POINTER = "LATEST"
DIGESTS = "digests.json"
FILES = ("model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json", "state.json", DIGESTS)
HASH_CHUNK = 1 << 24  # bytes hashed at a time: a large file is never read into memory whole


def _checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory itself, or the one named by path/LATEST."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the directory does not exist (train first, or check the path)")
    if (path / POINTER).is_file():
        name = read_text(path / POINTER, CheckpointError, limit=4096).strip()
        target = path / name
        if Path(name).name != name or name in ("", ".", "..") or not target.is_dir():
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
    keep: int = 2,
) -> Path:
    """Write a complete checkpoint under out_dir, point LATEST at it, and keep the newest ``keep``. Returns its
    directory. ``weights`` (default: the model's parameters) are what model.safetensors keeps: a
    mixed-precision run's float32 master weights."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    name = f"ckpt-{state['step']:06d}-{secrets.token_hex(3)}"
    bk = model.bk
    meta = {"train": config.to_dict(), "model": model.config.to_dict(), "task": task_meta or {}}
    if model.quantization is not None:
        meta["quantization"] = model.quantization
    full_state = {"format_version": FORMAT_VERSION, "optimizer_t": optimizer_state["t"], **state}
    files = {
        "model.safetensors": tensors_to_bytes(
            bk.to_host(quantized.tensors(model.params if weights is None else weights))
        ),
        "optimizer.safetensors": tensors_to_bytes(bk.to_host(optimizer_state["arrays"])),
        "config.json": json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"),
        "tokenizer.json": tokenizer.to_json().encode("utf-8"),
        "state.json": json.dumps(full_state, indent=1).encode("utf-8"),
    }
    digests = {f: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for f, data in files.items()}
    write_directory(out_dir / name, files | {DIGESTS: json.dumps(digests, indent=1)})
    atomic_write(out_dir / POINTER, name + "\n")
    for old in checkpoints(out_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir / name


def checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint directories of out_dir, newest first (in the order they were written)."""
    found = [p for p in Path(out_dir).glob("ckpt-*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(ckpt: Path, digests: bool = True, only: str | None = None) -> None:
    """A one-line CheckpointError naming the first file of ckpt (or the file ``only``) that is missing, or
    whose size (always) or SHA-256 (with ``digests``) differs from what was written. A format-2 checkpoint
    has no record to check."""
    if not (ckpt / DIGESTS).is_file():
        if _read_state(ckpt)["format_version"] == 2:
            return
        raise CheckpointError(f"checkpoint file {ckpt / DIGESTS} is missing; the checkpoint is incomplete")
    recorded = _read_json(ckpt / DIGESTS)
    if not isinstance(recorded, dict) or set(recorded) != set(FILES) - {DIGESTS}:
        raise CheckpointError(f"{ckpt / DIGESTS} does not list the checkpoint's files; it was altered")
    for name, want in recorded.items():
        if only is not None and name != only:
            continue
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
        size, want = path.stat().st_size, want if isinstance(want, dict) else {}
        if size != want.get("size"):
            raise CheckpointError(f"{path} is damaged: {size} bytes, {want.get('size')!r} were written")
        if digests and _sha256(path) != want.get("sha256"):
            raise CheckpointError(f"{path} is damaged: its bytes are not the ones written (SHA-256 differs)")


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
        return read_json(path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete") from None


def load_train_config(path: str | os.PathLike) -> dict[str, Any]:
    """The TrainConfig values a run was trained with, without loading any weights: from the checkpoint
    LATEST names, or the newest one whose config.json verifies (as ``load_newest_sound`` falls back)."""
    named = _checkpoint_dir(Path(path))
    candidates = [named, *(p for p in checkpoints(path) if p != named)] if named != Path(path) else [named]
    problems = []
    for ckpt in candidates:
        try:
            verify_checkpoint(ckpt, only="config.json")
            meta = _read_json(ckpt / "config.json")
            train = meta.get("train") if isinstance(meta, dict) else None
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if isinstance(train, dict):
            return train
        problems.append(f"{ckpt}/config.json has no training config")
    raise CheckpointError(f"no checkpoint in {path} verifies: {'; '.join(problems)}")


def load(
    path: str | os.PathLike,
    backend: str | Backend | None = None,
    device: str | None = None,
    dtype: str | None = None,
    verify: bool = True,
    quantize: str | None = None,
    group: int | None = None,
) -> Checkpoint:
    """Load a checkpoint, or a Hugging Face model directory, onto a backend (by default the one it was
    trained on; numpy, float32 for a Hugging Face directory). The model comes in evaluation mode (dropout
    off), as transformers' from_pretrained gives it; set ``model.training = True`` to train it by hand.
    ``verify=False`` skips the SHA-256 of each file (sizes are still checked). A run that moves LATEST while
    this reads is followed to its newer checkpoint. ``quantize`` ("int8", "int4"; ``group`` inputs per int4
    scale): the linear layers quantized once loaded (llmscratch.models.quantized); a checkpoint written
    quantized (``convert --quantize``) loads quantized without it."""
    if is_hf_dir(path):
        ck = _load_hf(Path(path), backend, device, dtype)
    else:
        ckpt = _checkpoint_dir(Path(path))
        try:
            ck = _load_checkpoint(ckpt, backend, device, dtype, verify)
        except CheckpointError:
            if ckpt.exists():  # damaged; not one that a running training removed while this read it
                raise
            ck = _load_checkpoint(_checkpoint_dir(Path(path)), backend, device, dtype, verify)
    if quantize is not None:
        quantized.quantize(ck.model, quantize, group)
    return ck


def quantize(model: Any, fmt: str = "int8", group: int | None = None, backend: str | Backend | None = None) -> Any:
    """A model, a checkpoint or a training result with its linear layers in ``fmt`` ("int8", "int4", with
    ``group`` inputs per int4 scale, 32 by default), quantized in place and returned; a path is loaded first
    (onto ``backend``) and its Checkpoint returned. Quantized models run forward passes only."""
    if isinstance(model, (str, os.PathLike)):
        return load(model, backend=backend, quantize=fmt, group=group)
    quantized.quantize(model if isinstance(model, Model) else model.model, fmt, group)
    return model


def merge_lora(model: Any) -> Any:
    """A LoRA model, checkpoint or training result with each adapter folded into the weight it adapts
    (W = W₀ + alpha/rank · A @ B), in place and returned: a plain model that computes the same."""
    lora.merge(model if isinstance(model, Model) else model.model)
    if not isinstance(model, Model):
        model.config = without_lora(model.config)
    return model


def load_newest_sound(out_dir: str | os.PathLike, backend: str | Backend | None = None) -> tuple[Checkpoint, list[str]]:
    """The checkpoint LATEST names or, if it does not verify, the newest one of out_dir that does; with the
    reason each newer one was passed over. A one-line error if none verifies."""
    named = _checkpoint_dir(Path(out_dir))
    passed: list[str] = []
    for ckpt in [named, *(p for p in checkpoints(out_dir) if p != named)]:
        try:
            return _load_checkpoint(ckpt, backend, None, None, verify=True), passed
        except CheckpointError as e:
            passed.append(str(e))
    raise CheckpointError(f"no checkpoint in {out_dir} verifies: {'; '.join(passed)}")


def _read_state(ckpt: Path) -> dict[str, Any]:
    """state.json, checked: a format this version reads, a step that is a count, a history that is a list of
    entries (the optimizer's step count is checked where it is used, by AdamW.load_state_dict)."""
    state = _read_json(ckpt / "state.json")
    if not isinstance(state, dict) or state.get("format_version") not in READABLE_FORMATS:
        found = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(
            f"{ckpt} has checkpoint format {found!r}, this llmscratch reads {', '.join(map(str, READABLE_FORMATS))}"
        )
    step, history = state.get("step"), state.get("history")
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0) or not (
        isinstance(history, list) and all(isinstance(h, dict) for h in history)
    ):
        raise CheckpointError(f"{ckpt}/state.json is malformed (step or history); it was altered")
    return state


def _load_checkpoint(
    ckpt: Path, backend: str | Backend | None, device: str | None, dtype: str | None, verify: bool
) -> Checkpoint:
    state = _read_state(ckpt)
    verify_checkpoint(ckpt, digests=verify)
    meta = _read_json(ckpt / "config.json")
    with malformed(f"{ckpt}/config.json", CheckpointError, "it does not describe a model this version can build"):
        try:
            train_cfg = TrainConfig(**meta["train"])
            model_cfg = ModelConfig.from_dict(meta["model"])
        except LLMScratchError as e:
            what = f"{ckpt}/config.json does not describe a model this version can build"
            raise CheckpointError(f"{what} ({e})") from None
        tokenizer = from_json_dict(_read_json(ckpt / "tokenizer.json"), str(ckpt / "tokenizer.json"))
        task_meta = meta.get("task", {})
        expected = task_class(train_cfg.task)(train_cfg, tokenizer, task_meta).model_vocab_size
    if expected != model_cfg.vocab_size:
        raise CheckpointError(
            f"{ckpt}: the tokenizer gives {expected} token ids but the model has {model_cfg.vocab_size}; "
            "the files come from different runs"
        )
    bk = _backend(train_cfg, backend, device, dtype)
    model = _model(
        bk,
        train_cfg,
        model_cfg,
        _read_tensors(ckpt / "model.safetensors"),
        f"{ckpt}/model.safetensors",
        meta.get("quantization"),
    )
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


def _model(
    bk: Backend,
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    host: dict[str, Any],
    source: str,
    quantization: dict[str, Any] | None = None,
) -> Model:
    """The model a checkpoint's tensors make, in evaluation mode; ``quantization``: the record of a quantized
    checkpoint (models/quantized.py), whose integer weights load as they are."""
    attention, op_set = fit_to_backend(train_cfg.attention, train_cfg.ops, bk, model_cfg.block_size)
    cls = model_class(model_cfg.kind)
    try:
        if quantization is None:
            params = bk.from_host(host)
        else:
            params = quantized.from_tensors(bk, host, quantization, cls.specs_for(model_cfg), source)
        model = cls(model_cfg, bk, params=params, attention=attention, ops=op_set)
    except LLMScratchError as e:
        raise CheckpointError(f"{source} does not match its config: {e}") from None
    if quantization is not None:
        quantized.mark_quantized(model, quantization)
    model.training = False
    return model


def save_hf(model: Any, path: str | os.PathLike, tokenizer: Tokenizer | None = None, merge: bool = False) -> Path:
    """Write a model (or a checkpoint, or a training result, with its tokenizer and labels) as a Hugging
    Face directory that ``transformers``' ``from_pretrained`` loads: GPT2LMHeadModel, LlamaForCausalLM or
    BertForSequenceClassification, whichever the architecture is (a one-line error if none is). Weights
    keep the model's dtype; safetensors only. A LoRA model's adapters go beside the base model in PEFT's
    files (``PeftModel.from_pretrained(base, path)``), or with ``merge`` into its weights."""
    if isinstance(model, Model):
        net, meta = model, {}
    else:
        net, meta = model.model, model.task_runner.meta()
        tokenizer = tokenizer or model.tokenizer
    if net.quantization is not None:
        raise ConfigError(
            "a Hugging Face directory holds float weights and this model is quantized; save the float model, "
            "or write a quantized llmscratch checkpoint (convert --to llmscratch --quantize)"
        )
    config, params = net.config, net.params
    if merge and config.lora:
        config, params = lora.merged(config, params, net.bk)
    return write_hf(path, config, net.bk.to_host(params), tokenizer, meta)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str,
    dtype: str | None = None,
    quantize: str | None = None,
    group: int | None = None,
    merge: bool = False,
) -> Path:
    """A checkpoint or Hugging Face directory written in the other format: ``to`` "hf" (save_hf) or
    "llmscratch" (a checkpoint at step 0, no optimizer state, for sample, chat, eval...; with ``quantize``
    its linear layers in int8 or int4, which ``load`` reads back quantized). ``merge``: a LoRA model's
    adapters folded into its weights (else they are written as they are). dst must be new or empty; it is
    written whole or not at all."""
    if to not in ("hf", "llmscratch"):
        raise ConfigError(f"convert --to must be hf or llmscratch, got {to!r}")
    if quantize is not None and to != "llmscratch":
        raise ConfigError("convert --quantize writes a llmscratch checkpoint; use --to llmscratch")
    ck = load(src, backend="numpy", dtype=dtype)
    if merge:
        merge_lora(ck)
    if quantize is not None:
        quantized.quantize(ck.model, quantize, group)
    if to == "hf":
        return save_hf(ck, dst)
    if ck.tokenizer is None:
        raise CheckpointError(f"{src} has no tokenizer files; a llmscratch checkpoint needs one (add tokenizer.json)")
    require_empty(dst)
    config = replace(ck.config, backend="numpy", device=None, dtype=ck.model.bk.dtype_name)
    state = {"step": 0, "history": [], "converted_from": str(src)}
    with DirectoryLock(dst, "llmscratch convert"):
        return save_checkpoint(
            dst, ck.model, ck.tokenizer, config, {"t": 0, "arrays": {}}, state, ck.task_runner.meta()
        )


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
