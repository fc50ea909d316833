"""Tensors to and from safetensors bytes, bfloat16 included (through ml_dtypes, which safetensors.numpy
cannot read back by itself)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from .backends import Backend
from .errors import CheckpointError

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


def to_backend(bk: Backend, host: dict[str, np.ndarray]) -> dict[str, Any]:
    """Host arrays -> arrays on bk in its dtype (bfloat16 and float16 go through float64 on the host)."""
    return {n: bk.from_numpy(a.astype(np.float64) if a.dtype.itemsize == 2 else a, bk.dtype) for n, a in host.items()}
