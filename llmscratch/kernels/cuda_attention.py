"""CUDA attention kernels for the cupy backend: "cuda-softmax" and "cuda-flash" (see cuda/attention.cu).

cuda-softmax:  S = Q Kᵀ and O = P V are cuBLAS matmuls (cupy's @); one kernel fuses scale + masks + softmax,
               and in backward one kernel turns dP into dS = s · P ∘ (dP - rowsum(dP ∘ P)).
cuda-flash:    FlashAttention-2 in three kernels: forward (saves the logsumexp), backward dK/dV (one thread
               per key row), backward dQ (one thread per query row); memory O(T), no atomics.

A ``launcher`` runs a kernel by name. On a GPU it is CupyLauncher, which compiles the .cu file once with
NVRTC; the tests pass one that runs the very same source on the CPU (tests/cuda_emulator), so this module's
shapes, grids and shared-memory sizes are exercised on machines without a GPU as well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..backends import Backend
from ..ops.attention import check_attention_inputs
from ..util.errors import ConfigError

SOURCE = Path(__file__).parent / "cuda" / "attention.cu"
HEAD_DIMS = (16, 32, 64, 128)  # compiled head dims: the per-thread rows live in registers, sized at compile time
FLASH_BLOCK = 64  # threads (= rows) per block in the flash kernels
SOFTMAX_THREADS = 128  # threads per row in the softmax kernels (a power of two)
C_TYPES = {"float32": "float", "float64": "double"}
FLASH_KERNELS = ("flash_forward", "flash_backward_dkdv", "flash_backward_dq")


class Launcher(Protocol):
    def __call__(
        self, kernel: str, ctype: str, D: int | None, grid: tuple[int, int], block: int, shared: int, args: tuple
    ) -> None: ...

    def contiguous(self, x: Any) -> Any: ...


class CupyLauncher:
    """Compiles cuda/attention.cu once (NVRTC, every dtype × head dim) and launches its kernels."""

    _module: Any = None

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        if CupyLauncher._module is None:
            names = [f"{k}<{t}>" for k in ("softmax_forward", "softmax_backward") for t in C_TYPES.values()]
            names += [f"{k}<{t}, {D}>" for k in FLASH_KERNELS for t in C_TYPES.values() for D in HEAD_DIMS]
            CupyLauncher._module = cupy.RawModule(
                code=SOURCE.read_text(), options=("--std=c++17",), name_expressions=names
            )

    def __call__(
        self, kernel: str, ctype: str, D: int | None, grid: tuple[int, int], block: int, shared: int, args: tuple
    ) -> None:
        fn = self._module.get_function(f"{kernel}<{ctype}>" if D is None else f"{kernel}<{ctype}, {D}>")
        if shared > 48 * 1024:  # above the default limit a kernel must opt in
            fn.max_dynamic_shared_size_bytes = shared
        fn(grid, (block,), args, shared_mem=shared)

    def contiguous(self, x: Any) -> Any:
        return self.cupy.ascontiguousarray(x)


def unavailable(bk: Backend) -> str | None:
    """Why the CUDA kernels cannot run on ``bk`` (a float16 backend: they are written for float and double)."""
    if bk.dtype_name not in C_TYPES:
        return f"the CUDA kernels compute in float32 or float64, not {bk.dtype_name}"
    return None


def _prepare(bk: Backend, launcher: Launcher | None, q: Any, k: Any, v: Any, key_mask: Any, op: str) -> tuple:
    B, H, Hkv, T, S, D = check_attention_inputs(q, k, v, key_mask, op)
    if reason := unavailable(bk):
        raise ConfigError(f"{op}: {reason}")
    launcher = launcher or CupyLauncher()
    xp = bk.xp
    mask = xp.ones((B, S), dtype=xp.uint8, device=bk.device) if key_mask is None else xp.astype(key_mask, xp.uint8)
    q, k, v, mask = (launcher.contiguous(a) for a in (q, k, v, mask))
    return launcher, B, H, Hkv, T, S, D, q, k, v, mask, C_TYPES[bk.dtype_name], np.dtype(bk.dtype_name).type


def _i32(*values: int) -> tuple:
    return tuple(np.int32(x) for x in values)


# ---- cuda-softmax: cuBLAS matmuls around a fused softmax -----------------------------------------------------


def softmax_attention_forward(
    bk: Backend,
    q: Any,
    k: Any,
    v: Any,
    causal: bool = True,
    key_mask: Any = None,
    scale: float | None = None,
    launcher: Launcher | None = None,
) -> tuple[Any, Any]:
    """q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,D), key_mask (B,S) bool or None -> out (B,H,T,D)"""
    xp = bk.xp
    launcher, B, H, Hkv, T, S, D, q, k, v, mask, ctype, scalar = _prepare(
        bk, launcher, q, k, v, key_mask, "cuda_softmax_attention"
    )
    s = scalar(1.0 / math.sqrt(D) if scale is None else scale)
    qg = xp.reshape(q, (B, Hkv, H // Hkv * T, D))
    scores = launcher.contiguous(qg @ xp.matrix_transpose(k))  # (B,Hkv,G·T,S) = (B,H,T,S), unscaled
    probs = xp.empty_like(scores)
    launcher(
        "softmax_forward",
        ctype,
        None,
        (B * H * T, 1),
        SOFTMAX_THREADS,
        SOFTMAX_THREADS * scores.itemsize,
        (scores, probs, mask, *_i32(H, T, S), s, np.int32(causal)),
    )
    out = xp.reshape(probs @ v, (B, H, T, D))
    return out, (qg, k, v, probs, s, launcher)


def softmax_attention_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (B,H,T,D) -> dq (B,H,T,D), dk (B,Hkv,S,D), dv (B,Hkv,S,D)"""
    xp = bk.xp
    qg, k, v, probs, s, launcher = cache
    dout_g = xp.reshape(launcher.contiguous(dout), qg.shape)
    dv = xp.matrix_transpose(probs) @ dout_g
    dprobs = launcher.contiguous(dout_g @ xp.matrix_transpose(v))
    dscores = xp.empty_like(dprobs)
    rows, S = math.prod(probs.shape[:-1]), probs.shape[-1]
    launcher(
        "softmax_backward",
        C_TYPES[bk.dtype_name],
        None,
        (rows, 1),
        SOFTMAX_THREADS,
        SOFTMAX_THREADS * probs.itemsize,
        (probs, dprobs, dscores, np.int32(S), s),
    )
    dq = xp.reshape(dscores @ k, dout.shape)
    dk = xp.matrix_transpose(dscores) @ qg
    return dq, dk, dv


# ---- cuda-flash: FlashAttention-2 -------------------------------------------------------------------------


def flash_forward(
    bk: Backend,
    q: Any,
    k: Any,
    v: Any,
    causal: bool = True,
    key_mask: Any = None,
    scale: float | None = None,
    launcher: Launcher | None = None,
) -> tuple[Any, Any]:
    """q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,D), key_mask (B,S) bool or None -> out (B,H,T,D)"""
    xp = bk.xp
    launcher, B, H, Hkv, T, S, D, q, k, v, mask, ctype, scalar = _prepare(
        bk, launcher, q, k, v, key_mask, "cuda_flash_attention"
    )
    if D not in HEAD_DIMS:
        raise ConfigError(
            f"the cuda-flash kernel is compiled for head dims {HEAD_DIMS}, not {D}; use attention='flash'"
        )
    s = scalar(1.0 / math.sqrt(D) if scale is None else scale)
    out = xp.empty_like(q)
    lse = xp.empty((B, H, T), dtype=q.dtype, device=bk.device)
    launcher(
        "flash_forward",
        ctype,
        D,
        (-(-T // FLASH_BLOCK), B * H),
        FLASH_BLOCK,
        2 * FLASH_BLOCK * D * q.itemsize,
        (q, k, v, mask, out, lse, *_i32(H, Hkv, T, S), s, np.int32(causal)),
    )
    return out, (q, k, v, mask, out, lse, s, causal, launcher)


def flash_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (B,H,T,D) -> dq (B,H,T,D), dk (B,Hkv,S,D), dv (B,Hkv,S,D)"""
    xp = bk.xp
    q, k, v, mask, out, lse, s, causal, launcher = cache
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    dout = launcher.contiguous(dout)
    delta = launcher.contiguous(xp.sum(dout * out, axis=-1))  # D_i = rowsum(dO ∘ O), (B,H,T)
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    ints, ctype, size = _i32(H, Hkv, T, S), C_TYPES[bk.dtype_name], q.itemsize
    launcher(
        "flash_backward_dkdv",
        ctype,
        D,
        (-(-S // FLASH_BLOCK), B * Hkv),
        FLASH_BLOCK,
        FLASH_BLOCK * (2 * D + 2) * size,
        (q, k, v, mask, dout, lse, delta, dk, dv, *ints, s, np.int32(causal)),
    )
    launcher(
        "flash_backward_dq",
        ctype,
        D,
        (-(-T // FLASH_BLOCK), B * H),
        FLASH_BLOCK,
        2 * FLASH_BLOCK * D * size,
        (q, k, v, mask, dout, lse, delta, dq, *ints, s, np.int32(causal)),
    )
    return dq, dk, dv
