"""Tensors to safetensors bytes and back from a safetensors file, bfloat16 included (through ml_dtypes, which
safetensors.numpy cannot read back by itself)."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from .errors import CheckpointError
from .reading import parse_json

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I8": np.int8,
    "U8": np.uint8,
}


@cache
def bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16, imported when first needed (the import alone takes most of a second)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def safetensors_dtype(name: object) -> np.dtype | None:
    """The NumPy dtype of a safetensors dtype name (BF16 included), None for one this reader does not take."""
    if not isinstance(name, str):
        return None
    return bfloat16() if name == "BF16" else SAFETENSORS_DTYPES.get(name)


HEADER_LIMIT = 100_000_000  # bytes: the bound the safetensors library itself sets


def tensors_to_bytes(host: dict[str, np.ndarray]) -> bytes:
    """Named host arrays (``Backend.to_host``) -> the bytes of a safetensors file."""
    return safetensors.numpy.save(host)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file -> its tensors, as read-only NumPy views of the file mapped into memory (nothing is
    read until used, so a model is never held twice; bfloat16 through ml_dtypes). The format: an 8-byte
    little-endian header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}}, the data.
    A header longer than the file, or than ``HEADER_LIMIT``, is refused before it is read; every entry is
    checked (its types, its bytes inside the file) before any tensor is made. A missing file raises
    FileNotFoundError; a truncated or malformed one is a one-line CheckpointError."""

    corrupt = _corrupt(path)
    n, header, size = _header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > 8 + n else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise corrupt(f"tensor {name!r} has no dtype, shape and data_offsets")
        dtype = safetensors_dtype(info.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not _counts(shape) or not _counts(offsets) or len(offsets) != 2:
            raise corrupt(f"tensor {name!r} has a malformed shape or data_offsets")
        begin, end = offsets
        if end - begin != math.prod(shape) * np.dtype(dtype).itemsize or 8 + n + end > size:
            raise corrupt(f"tensor {name} lies outside the file")
        out[name] = data[8 + n + begin : 8 + n + end].view(dtype).reshape(shape)
    return out


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string-to-string ``__metadata__`` of a safetensors file's header ({} where it has none), checked
    as ``read_safetensors`` checks the header."""
    metadata = _header(path)[1].get("__metadata__") or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _corrupt(path)("its __metadata__ is not a table of strings")
    return metadata


def _corrupt(path: Path) -> Any:
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt ({why}); it may be truncated: write or copy it again")

    return corrupt


def _header(path: Path) -> tuple[int, dict[str, Any], int]:
    """-> (the header's length, the header, the file's size); a header longer than the file, or than
    ``HEADER_LIMIT``, is refused before it is read"""
    corrupt = _corrupt(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if n > HEADER_LIMIT:
            raise corrupt(f"its header length {n} is more than the {HEADER_LIMIT} bytes a header may have")
        if not 0 < n <= size - 8:
            raise corrupt(f"its header length {n} does not fit a file of {size} bytes")
        header = parse_json(f.read(n), f"{path}'s header", CheckpointError)
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    return n, header, size


def _counts(value: object) -> bool:
    """A list of non-negative ints (a shape, or data offsets)."""
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
