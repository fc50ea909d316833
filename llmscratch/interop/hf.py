"""Hugging Face model directories, read and written with safetensors only (never pickle).

    read_hf(path)  -> HFModel: our ModelConfig, our tensors (NumPy), the tokenizer if the directory has one,
                      the task's meta (a classifier's labels) and the names drawn fresh (a head the file lacks)
    write_hf(path, config, tensors, tokenizer, meta)   a directory ``transformers.AutoModel*.from_pretrained``
                      and ``AutoTokenizer.from_pretrained`` load

A directory holds config.json and model.safetensors, or shards named by model.safetensors.index.json.
Tensor names and layouts are translated by the family's rules (llmscratch.interop.families). A file may
lack a head (BertModel has no classifier, BertForMaskedLM no pooler): those weights are drawn as a new
model's would be, and named in ``fresh``, as transformers' "newly initialized" warning does.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from ..layers.lora import is_adapter
from ..models import ModelConfig, model_class
from ..models.base import draw_params
from ..models.config import without_lora
from ..tokenizers import Tokenizer, find_tokenizer
from ..tokenizers.hf import with_task_tokens
from ..util.atomic import write_directory
from ..util.errors import CheckpointError, ConfigError
from ..util.reading import malformed, read_json
from ..util.tensors import read_safetensors
from .families import OLD_NORM_NAMES, Family, family_for, family_of
from .peft import ADAPTER_CONFIG, adapter_base, adapter_files, read_adapter

INDEX = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
FRESH_OK = re.compile(r"^(classifier|pooler)\.")  # heads a base-model file may lack


@dataclass
class HFModel:
    family: type[Family]
    config: ModelConfig
    tensors: dict[str, np.ndarray]  # our names and layouts, in the file's dtype
    tokenizer: Tokenizer | None
    meta: dict[str, Any] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)


def is_hf_dir(path: str | os.PathLike) -> bool:
    """A Hugging Face model directory: a config.json (or a PEFT adapter's adapter_config.json) without the
    state.json of a llmscratch checkpoint (what the config says, or why it cannot be read, is read_hf's to
    tell)."""
    path = Path(path)
    has_config = (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file()
    return has_config and not (path / "state.json").is_file()


def _read_json(path: Path) -> Any:
    try:
        return read_json(path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_safetensors(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; the model directory is incomplete") from None


def _inside(path: Path, name: object) -> Path:
    """The shard an index names, if it lies in the model directory: a plain relative name, whose file (links
    followed) is in the directory, or, for a Hugging Face cache snapshot, in its repository's blobs folder."""
    index = path / INDEX
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{index} names {name!r}, which is not a file inside {path}; it is refused")
    shard = path / name
    real, home = shard.resolve(), path.resolve()
    blobs = home.parent.parent / "blobs" if home.parent.name == "snapshots" else None
    if not (real.is_relative_to(home) or (blobs is not None and real.is_relative_to(blobs))):
        raise CheckpointError(f"{index} names {name!r}, a link to {real} outside {path}; it is refused")
    return shard


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the directory's model.safetensors, or of the shards its index names."""
    if (path / "model.safetensors").is_file():
        return _read_safetensors(path / "model.safetensors")
    if (path / INDEX).is_file():
        weight_map = _read_json(path / INDEX).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{path / INDEX} has no weight_map")
        out: dict[str, np.ndarray] = {}
        for shard in sorted({_inside(path, name) for name in weight_map.values()}):
            out.update(_read_safetensors(shard))
        return out
    pickled = [p for p in PICKLES if (path / p).exists()]
    if pickled:
        raise CheckpointError(
            f"{path} holds only {pickled[0]}, a pickle, which llmscratch never loads (it can run code); convert it "
            'to safetensors first: python -c "import transformers as t; '
            f"t.AutoModel.from_pretrained('{path}').save_pretrained('{path}-safetensors')\""
        )
    raise CheckpointError(f"{path} has no model.safetensors (nor {INDEX})")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def read_hf(path: str | os.PathLike) -> HFModel:
    """A Hugging Face model directory -> our config and tensors (see the module docstring); values of the
    wrong type anywhere in its files are one CheckpointError line. With a PEFT LoRA adapter (its files in
    ``path``, the base model there or in the local directory the adapter names) the model has its adapters
    (llmscratch.interop.peft)."""
    path = Path(path)
    with malformed(str(path), CheckpointError, "a file of it is damaged, or its files do not belong together"):
        if not (path / ADAPTER_CONFIG).is_file():
            return _read_hf(path)
        hf = _read_hf(adapter_base(path))
        dtype = next(iter(hf.tensors.values())).dtype
        hf.config, adapters = read_adapter(path, hf.family, hf.config, dtype)
        hf.tensors |= adapters
        return hf


def _read_hf(path: Path) -> HFModel:
    hf = _read_json(path / "config.json")
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}/config.json is not a JSON object; it is damaged")
    family = family_of(hf, str(path / "config.json"))
    try:
        config = ModelConfig(**family.architecture(hf))
    except ConfigError as e:
        raise ConfigError(f"{path}/config.json: {e}") from None
    file = {
        OLD_NORM_NAMES.sub(lambda m: ".weight" if m[1] == "gamma" else ".bias", n): a
        for n, a in read_weights(path).items()
    }
    theirs = {family.canonical_name(n): a for n, a in file.items()}
    rules = family.rules(config)
    specs = model_class(config.kind).specs_for(config)
    fresh = [r.ours for r in rules if FRESH_OK.match(r.ours) and not all(n in theirs for n in r.theirs)]
    known = {n for r in rules for n in r.theirs}
    missing = sorted({n for r in rules if r.ours not in fresh for n in r.theirs} - set(theirs))
    ignored = re.compile(family.ignored) if family.ignored else None
    tied_head = {"lm_head.weight"} if config.tie_embeddings and config.kind == "gpt" else set()
    unexpected = sorted(n for n in set(theirs) - known - tied_head if not (ignored and ignored.search(n)))
    if missing or unexpected:
        parts = [f"missing {_listed(missing)}"] * bool(missing) + [f"unexpected {_listed(unexpected)}"] * bool(
            unexpected
        )
        raise CheckpointError(
            f"{path}: the weights do not match its config.json ({family.architectures[0]}): {'; '.join(parts)}"
        )
    tensors: dict[str, np.ndarray] = {}
    for rule in rules:
        if rule.ours in fresh:
            continue
        want = rule.their_shapes(specs[rule.ours][0])
        for n, shape in want.items():
            if tuple(theirs[n].shape) != shape:
                raise CheckpointError(
                    f"{path}: weight {n} has shape {tuple(theirs[n].shape)}, config.json makes it {shape}"
                )
        tensors[rule.ours] = rule.load(theirs)
    if fresh:
        drawn = draw_params({n: specs[n] for n in fresh}, config.init_depth, _host_backend(), seed=0)
        tensors.update({n: np.asarray(a) for n, a in drawn.items()})
    meta = {}
    if config.kind == "encoder":
        labels = hf.get("id2label") or {}
        meta["labels"] = [labels.get(str(i), labels.get(i, f"LABEL_{i}")) for i in range(config.n_classes)]
    tokenizer = find_tokenizer(path)
    # a classifier's ids: the tokenizer's own (BERT's [PAD] [CLS] [SEP]) or appended after it
    ids = (
        None
        if tokenizer is None
        else tokenizer.specials().vocab_size
        if config.kind == "encoder"
        else tokenizer.vocab_size
    )
    if ids is not None and ids != config.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {ids} token ids but config.json's vocab_size is {config.vocab_size}; "
            "the files come from different models"
        )
    return HFModel(family, config, {n: tensors[n] for n in specs}, tokenizer, meta, fresh)


def _host_backend() -> Any:
    from ..backends import get_backend

    return get_backend("numpy", dtype="float64")


def write_hf(
    path: str | os.PathLike,
    config: ModelConfig,
    tensors: dict[str, np.ndarray],
    tokenizer: Tokenizer | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a Hugging Face model directory: config.json, model.safetensors, and the tokenizer's
    tokenizer.json + tokenizer_config.json; for a LoRA model, the base model there and its adapters beside
    it in PEFT's files (llmscratch.interop.peft). The directory is written whole under a temporary name and
    then renamed, so it is complete or absent; an existing non-empty directory is never overwritten."""
    path = Path(path)
    family = family_for(config)
    files: dict[str, bytes | str] = {}
    if config.lora:
        files |= adapter_files(family, config, tensors, path)
        config, tensors = without_lora(config), {n: a for n, a in tensors.items() if not is_adapter(n)}
    full = family.full_config(config)
    specs = model_class(full.kind).specs_for(full)
    theirs: dict[str, np.ndarray] = {}
    dtype = next(iter(tensors.values())).dtype
    for rule in family.rules(full):
        ours = tensors.get(rule.ours)
        if ours is None:  # a bias or token-type table we do without: zeros compute the same
            ours = np.zeros(specs[rule.ours][0], dtype=dtype)
        theirs.update(rule.save(np.asarray(ours)))
    hf = {
        "architectures": [family.architectures[0]],
        "model_type": family.name,
        **family.hf_config(full, meta or {}),
        "dtype": str(dtype),
    }
    if tokenizer is not None:
        hf_tokenizer, roles = with_task_tokens(tokenizer, config.vocab_size)
        hf.update({f"{role}_token_id": i for role, (_, i) in roles.items()})

    files["model.safetensors"] = safetensors.numpy.save(theirs, metadata={"format": "pt"})
    files["config.json"] = json.dumps(hf, indent=2, ensure_ascii=False)
    if tokenizer is not None:
        files["tokenizer.json"] = hf_tokenizer.to_str(pretty=True)
        files["tokenizer_config.json"] = tokenizer_config(tokenizer, roles, config)
    return write_directory(path, files)


def tokenizer_config(tokenizer: Tokenizer, roles: dict[str, tuple[str, int]], config: ModelConfig) -> str:
    """tokenizer_config.json: the class AutoTokenizer builds, the context, each special token's role."""
    tok_config = {
        "tokenizer_class": "BertTokenizerFast" if tokenizer.kind == "wordpiece" else "PreTrainedTokenizerFast",
        "model_max_length": config.block_size,
        "clean_up_tokenization_spaces": False,
        **{f"{role}_token": name for role, (name, _) in roles.items()},
    }
    if tokenizer.kind == "wordpiece":
        tok_config["do_lower_case"] = tokenizer.lowercase
    return json.dumps(tok_config, indent=2, ensure_ascii=False)
