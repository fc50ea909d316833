"""Tensors to safetensors bytes and back from a safetensors file, bfloat16 included (through ml_dtypes, which
safetensors.numpy cannot read back by itself)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import safetensors.numpy

from .errors import CheckpointError

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
}


def tensors_to_bytes(host: dict[str, np.ndarray]) -> bytes:
    """Named host arrays (``Backend.to_host``) -> the bytes of a safetensors file."""
    return safetensors.numpy.save(host)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file -> its tensors, as read-only NumPy views of the file mapped into memory (nothing is
    read until used, so a model is never held twice; bfloat16 through ml_dtypes). The format: an 8-byte
    little-endian header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}}, the data.
    A missing file raises FileNotFoundError; a truncated or malformed one is a one-line CheckpointError."""

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt ({why}); it may be truncated: write or copy it again")

    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 0 < n <= size - 8:
            raise corrupt("no valid header length")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise corrupt(f"bad header: {e}") from None
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > 8 + n else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
        if end - begin != math.prod(shape) * np.dtype(dtype).itemsize or 8 + n + end > size:
            raise corrupt(f"tensor {name} lies outside the file")
        out[name] = data[8 + n + begin : 8 + n + end].view(dtype).reshape(shape)
    return out
