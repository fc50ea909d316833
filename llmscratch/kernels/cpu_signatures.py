"""The table of the fused C++ CPU kernels' signatures (cpu/fused.cpp), and everything derived from it.

Each kernel is a template over its float type T in fused.cpp. Its parameters are written only in ``KERNELS``:
the ``extern "C"`` wrappers name_f32 / name_f64 that the library exports are generated from it (``exports``),
and so are the ctypes argument types each call is checked against (``argtypes``).
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

from ..ops.adamw import AdamWStep

SOURCE = Path(__file__).parent / "cpu" / "fused.cpp"
SUFFIX = {"float32": "f32", "float64": "f64"}  # the exported name's suffix per dtype
REAL = {"float32": ("float", ctypes.c_float), "float64": ("double", ctypes.c_double)}  # T in C and in ctypes

# Each kernel's C++ parameters (T: float or double).
KERNELS = {
    "gelu_forward": "T* out, T* sig, const T* x, int64_t n",
    "gelu_backward": "T* dx, const T* dout, const T* x, const T* sig, int64_t n",
    "layernorm_forward": "T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C, T eps",
    "layernorm_backward": (
        "T* dx, T* dw, T* db, const T* dout, const T* x, const T* mean, const T* rstd, const T* w, int64_t N, int64_t C"
    ),
    "matmul": (
        "T* out, const T* a, const T* b, const T* bias, int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, "
        "int64_t b_rs, int64_t b_cs"
    ),
    "quantized_matmul": (
        "T* out, const T* a, const uint8_t* q, const T* scale, const T* bias, int64_t M, int64_t N, int64_t K, "
        "int64_t G, int64_t int4"
    ),
    "cross_entropy_forward": (
        "T* probs, double* loss_sum, int64_t* kept_and_bad, const T* logits, const int64_t* targets, int64_t N, "
        "int64_t V, int64_t ignore"
    ),
    "cross_entropy_backward": (
        "T* dlogits, const T* probs, const int64_t* targets, int64_t N, int64_t V, int64_t ignore, T scale"
    ),
    "sum_of_squares": "const T* const* xs, const int64_t* sizes, int64_t count, double* out",
    "adamw_step": (
        "T* const* ps, const T* const* gs, T* const* ms, T* const* vs, const int64_t* sizes, const T* decays, "
        "int64_t count, T grad_scale, " + ", ".join(f"T {scalar}" for scalar in AdamWStep._fields)
    ),
    "attention_tiled_forward": (
        "T* out, T* P, const T* q, const T* k, const T* v, const uint8_t* key_mask, int64_t B, int64_t H, "
        "int64_t Hkv, int64_t T_, int64_t S, int64_t D, const int64_t* strides, int64_t causal, T scale"
    ),
    "attention_tiled_backward": (
        "T* dq, T* dk, T* dv, const T* dout, const T* P, const T* q, const T* k, const T* v, int64_t B, int64_t H, "
        "int64_t Hkv, int64_t T_, int64_t S, int64_t D, const int64_t* strides, int64_t causal, T scale"
    ),
}


THE_FLOAT = re.compile(r"\bT\b")  # the template's float type in a C type


def _parameters(name: str) -> list[tuple[str, str]]:
    """KERNELS[name] as (C type, parameter name) pairs."""
    return [tuple(p.strip().rsplit(" ", 1)) for p in KERNELS[name].split(",")]  # type: ignore[misc]


def exported_name(name: str, dtype_name: str) -> str:
    """The C symbol of kernel ``name`` for float32 or float64."""
    return f"{name}_{SUFFIX[dtype_name]}"


def exports() -> str:
    """The C++ that exports every kernel of KERNELS for float and double (appended to fused.cpp)."""
    lines = [f'#include "{SOURCE}"']
    for dtype_name, (real, _) in REAL.items():
        for name in KERNELS:
            params = _parameters(name)
            declared = ", ".join(f"{THE_FLOAT.sub(real, c_type)} {arg}" for c_type, arg in params)
            call = ", ".join(arg for _, arg in params)
            symbol = exported_name(name, dtype_name)
            lines.append(f'extern "C" void {symbol}({declared}) {{ {name}<{real}>({call}); }}')
    return "\n".join(lines) + "\n"


def argtypes(name: str, dtype_name: str) -> list[Any]:
    """The ctypes argument types of kernel ``name`` for float32 or float64: pointers as void*, T as the float."""
    real = REAL[dtype_name][1]
    scalars = {"T": real, "int64_t": ctypes.c_int64, "double": ctypes.c_double}
    return [ctypes.c_void_p if "*" in c_type else scalars[c_type] for c_type, _ in _parameters(name)]
