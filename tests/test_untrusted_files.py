"""Model directories and files from someone else: nothing outside the directory is read, nothing oversized is
allocated, nothing nested or malformed reaches Python as anything but a one-line error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import llmscratch
from llmscratch.interop.hf import INDEX, read_weights
from llmscratch.models import GPT, GPTConfig
from llmscratch.tokenizers import CharTokenizer
from llmscratch.util import reading, tensors
from llmscratch.util.errors import CheckpointError, ConfigError, DataError, LLMScratchError, TokenizerError

DEEP = "[" * 100_000 + "]" * 100_000  # far past Python's recursion limit


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    model = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8))
    return llmscratch.save_hf(model, tmp_path / "hf", tokenizer=CharTokenizer("abc"))


def sharded(folder: Path, shard_name: str) -> None:
    """folder's model.safetensors moved to ``shard_name`` (relative to folder) and named by an index."""
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").unlink()
    target = folder / shard_name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(weights)
    names = json.loads(weights[8 : 8 + int.from_bytes(weights[:8], "little")])
    index = {"weight_map": {n: shard_name for n in names if n != "__metadata__"}}
    (folder / INDEX).write_text(json.dumps(index))


def test_a_sharded_directory_loads(hf_dir):
    want = read_weights(hf_dir)
    sharded(hf_dir, "model-00001-of-00001.safetensors")
    got = read_weights(hf_dir)
    assert got.keys() == want.keys() and all(np.array_equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors"])
def test_an_index_naming_a_file_outside_is_refused(hf_dir, name):
    sharded(hf_dir, "model-00001-of-00001.safetensors")
    (hf_dir.parent / "outside.safetensors").write_bytes((hf_dir / "model-00001-of-00001.safetensors").read_bytes())
    (hf_dir / INDEX).write_text(json.dumps({"weight_map": {"lm_head.weight": name}}))
    with pytest.raises(CheckpointError, match="which is not a file inside"):
        llmscratch.load(hf_dir)


def test_an_index_naming_an_absolute_path_is_refused(hf_dir, tmp_path):
    (hf_dir / INDEX).write_text(json.dumps({"weight_map": {"x": str(hf_dir / "model.safetensors")}}))
    (hf_dir / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="which is not a file inside"):
        read_weights(hf_dir)


def test_a_link_leading_out_is_refused_but_the_hub_cache_layout_loads(tmp_path, hf_dir):
    sharded(hf_dir, "model-00001-of-00001.safetensors")
    secret = tmp_path / "secret.safetensors"
    (hf_dir / "model-00001-of-00001.safetensors").rename(secret)
    (hf_dir / "model-00001-of-00001.safetensors").symlink_to(secret)
    with pytest.raises(CheckpointError, match=f"a link to {secret} outside"):
        read_weights(hf_dir)
    # the Hugging Face cache: snapshots/<revision>/ holds links to ../../blobs/<hash>
    repo = tmp_path / "models--someone--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in hf_dir.iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        blob.write_bytes(secret.read_bytes() if f.is_symlink() else f.read_bytes())
        (snapshot / f.name).symlink_to(Path("../../blobs") / blob.name)
    assert llmscratch.load(snapshot).model.config.n_embd == 8


def safetensors_file(path: Path, header: object, data: bytes = b"", claimed: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if claimed is None else claimed) + raw + data)
    return path


@pytest.mark.parametrize(
    "header, data, claimed, message",
    [
        ({}, b"", 2**62, "header length 4611686018427387904 is more than the 100000000 bytes"),
        ({}, b"", 1000, "header length 1000 does not fit a file of 10 bytes"),
        ({}, b"", 0, "header length 0"),
        ([1, 2], b"", None, "its header is not a JSON object"),
        ({"w": 3}, b"", None, "has no dtype, shape and data_offsets"),
        ({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8, None, "malformed shape"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, b"\0" * 8, None, "malformed shape"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, None, "malformed shape"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, True]}}, b"\0" * 8, None, "malformed shape"),
        ({"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 8]}}, b"\0" * 8, None, "lies outside the file"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None, "lies outside the file"),
        ({"w": {"dtype": "U16", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unsupported dtype U16"),
    ],
)
def test_bad_safetensors_headers_are_refused_before_any_allocation(tmp_path, header, data, claimed, message):
    path = safetensors_file(tmp_path / "w.safetensors", header, data, claimed)
    with pytest.raises(CheckpointError, match=message) as e:
        tensors.read_safetensors(path)
    assert "\n" not in str(e.value)


def test_a_header_over_the_bound_is_not_read(tmp_path, monkeypatch):
    path = safetensors_file(tmp_path / "w.safetensors", {"__metadata__": {"pad": "x" * 1000}})
    monkeypatch.setattr(tensors, "HEADER_LIMIT", 100)
    with pytest.raises(CheckpointError, match="header length 1029 is more than the 100 bytes a header may have"):
        tensors.read_safetensors(path)


@pytest.mark.parametrize("file", ["config.json", INDEX])
def test_deeply_nested_json_in_a_model_directory_is_one_line(hf_dir, file):
    (hf_dir / file).write_text(
        DEEP if file == INDEX else json.dumps({"model_type": "gpt2", "x": 1})[:-1] + "," + '"d":' + DEEP + "}"
    )
    if file == INDEX:
        (hf_dir / "model.safetensors").unlink()
    with pytest.raises(LLMScratchError, match="nested too deeply") as e:
        llmscratch.load(hf_dir)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "content, error, message",
    [
        (DEEP, TokenizerError, "nested too deeply"),
        (b"\xff\xfe{}", TokenizerError, r"is not UTF-8 text \(bad byte at offset 0\)"),
        ('{"type": "char", "chars": "ab"', TokenizerError, "is not valid JSON"),
        ('{"type": "char", "n": ' + "9" * 5000 + "}", TokenizerError, "is not valid JSON"),
    ],
)
def test_bad_tokenizer_files_are_one_line(tmp_path, content, error, message):
    path = tmp_path / "tok.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(error, match=message) as e:
        llmscratch.tokenizers.load(path)
    assert "\n" not in str(e.value)


def test_an_oversized_json_file_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "tok.json"
    CharTokenizer("abc").save(path)
    monkeypatch.setattr(reading, "JSON_LIMIT", 20)
    with pytest.raises(TokenizerError, match=r"tok\.json is \d+ B, more than the 20 B such a file can be"):
        llmscratch.tokenizers.load(path)


def test_an_oversized_jsonl_line_is_refused_without_reading_on(tmp_path, monkeypatch):
    from llmscratch.data.files import read_chat

    path = tmp_path / "chat.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 500}]})
    path.write_text(f"{line}\n{line}\n")
    monkeypatch.setattr(reading, "LINE_LIMIT", 200)
    with pytest.raises(DataError, match=r"chat\.jsonl:1: the line is longer than 200 B"):
        read_chat(path)


def test_deeply_nested_jsonl_and_toml_are_one_line(tmp_path):
    from llmscratch.data.files import read_pairs
    from llmscratch.training.config import read_toml

    (tmp_path / "p.jsonl").write_text('{"source": "a", "target": "b"}\n' + DEEP + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:2 is nested too deeply"):
        read_pairs(tmp_path / "p.jsonl")
    (tmp_path / "c.toml").write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match=r"c\.toml is not valid TOML"):
        read_toml(tmp_path / "c.toml")
