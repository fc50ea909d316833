"""Fused CPU kernels for the numpy and torch backends on the CPU: the "cpu-fused" op set and the "cpu-tiled"
attention kernel.

Each function here has the signature of the Array API op it stands in for (``llmscratch.ops``) and computes
the same math in one or two passes over memory instead of one per operator, and a GEMM for the linear
layers, by calling the C++ kernels of cpu/fused.cpp (their signatures: cpu_signatures.py; how they are
compiled and loaded: cpu_build.py).

The linear layers' matmul is the C++ GEMM or the vendor BLAS, whichever measured faster for the shape class
on this machine (gemm_choice.py). The kernels compute in float32 or float64; a 16-bit backend (torch
bfloat16 / float16) runs them on widened float32 inputs and rounds their results back (``_through_float32``),
while its vendor matmul multiplies in the 16-bit dtype itself.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from functools import cache, wraps
from pathlib import Path
from typing import Any

from .. import ops
from ..backends import HALF_DTYPES, Backend, get_backend
from ..ops import adamw, cross_entropy
from ..ops.attention import check_attention_inputs
from . import cpu_build
from .cpu_build import kernel
from .gemm_choice import GemmChoices


@cache
def _float32_twin(name: str, device: str) -> Backend:
    return get_backend(name, device, "float32")


def _through_float32(round_back: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The kernels compute in float32 or float64. On a 16-bit backend an op's 16-bit array arguments are
    widened to float32 and it runs on the float32 twin backend; then round_back says what of its result is
    rounded to the 16-bit dtype: "out" (a forward's (out, cache): the cache stays float32 for the backward),
    "all" (a backward's gradients) or "none" (a float32 loss)."""

    def wrap(op: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(op)
        def run(bk: Backend, *args: Any, **kwargs: Any) -> Any:
            if bk.dtype_name not in HALF_DTYPES:
                return op(bk, *args, **kwargs)
            wide = _float32_twin(bk.name, bk.device_label)
            args = tuple(bk.widen(a) if getattr(a, "dtype", None) == bk.dtype else a for a in args)
            result = op(wide, *args, **kwargs)
            if round_back == "out":
                return bk.narrow(result[0]), result[1]
            if round_back == "all" and isinstance(result, tuple):
                return tuple(None if g is None else bk.narrow(g) for g in result)
            return bk.narrow(result) if round_back == "all" else result

        return run

    return wrap


def gemm_choices() -> GemmChoices:
    """The GEMM choices of the compiled library in use."""
    return _gemm_choices(str(cpu_build.library_in_use()))


@cache
def _gemm_choices(library: str) -> GemmChoices:
    return GemmChoices(Path(library).with_suffix(".gemm.json"))


def matmul(bk: Backend, a: Any, b: Any, bias: Any = None) -> Any:
    """a (M,K), b (K,N), bias (N,) or None -> a @ b + bias (M,N).

    The C++ GEMM (``gemm``) or the library's own matmul (the vendor BLAS: numpy's OpenBLAS, torch's MKL or
    oneDNN), whichever measured faster for this shape class on this machine (gemm_choice.py). On a 16-bit
    backend the vendor multiplies in the 16-bit dtype and the C++ GEMM in float32, rounded once at the end.
    float64, the dtype runs are checked in, always takes the C++ GEMM: it sums in the same order whatever the
    thread count, so float64 runs agree bit for bit across processes, thread counts and resumes, which a
    choice measured anew in each process could not promise.
    """
    if bk.dtype_name == "float64":
        return gemm(bk, a, b, bias)
    if cpu_build.threaded() is not None:
        bk.make_room_for_openmp()  # before the vendor's products are timed
    candidates = {"own": lambda: gemm(bk, a, b, bias), "vendor": lambda: ops.matmul(bk, a, b, bias)}
    return candidates[gemm_choices().choose(bk, a, b, candidates)]()


@_through_float32("all")
def gemm(bk: Backend, a: Any, b: Any, bias: Any = None) -> Any:
    """The C++ GEMM, on OpenMP threads where the openmp build runs: a and b read through their strides."""
    (M, K), N = a.shape, b.shape[1]
    if 1 not in bk.strides(b):  # the kernel reads B by its rows or by its columns: one must be contiguous
        b = bk.contiguous(b)
    out = bk.xp.empty((M, N), dtype=bk.dtype, device=bk.device)
    bias_pointer = 0 if bias is None else bk.pointer(bk.contiguous(bias))
    pointers = (bk.pointer(out), bk.pointer(a), bk.pointer(b), bias_pointer)
    kernel(bk, "matmul")(*pointers, M, N, K, *bk.strides(a), *bk.strides(b))
    return out


@_through_float32("all")
def quantized_matmul(bk: Backend, a: Any, qw: ops.QuantizedWeight, bias: Any = None) -> Any:
    """a (M,C), qw standing for ŵ (C,N), bias (N,) or None -> a @ ŵ + bias (M,N): the C++ kernel reads the
    integers and widens them in registers (ops.quantize_weight gives the layout; ops.quantized_matmul the math)."""
    (M, K), N = a.shape, qw.shape[1]
    a = bk.contiguous(a)
    scale = bk.contiguous(bk.widen(qw.scale))  # itself, but a 16-bit model's scales on the float32 twin
    out = bk.xp.empty((M, N), dtype=bk.dtype, device=bk.device)
    bias_pointer = 0 if bias is None else bk.pointer(bk.contiguous(bias))
    q = bk.contiguous(qw.q)  # itself: ops.quantize_weight lays q out row by row
    pointers = (bk.pointer(out), bk.pointer(a), bk.pointer(q), bk.pointer(scale), bias_pointer)
    kernel(bk, "quantized_matmul")(*pointers, M, N, K, qw.group, int(qw.format == "int4"))
    return out


@_through_float32("out")
def gelu_forward(bk: Backend, x: Any, form: str = "tanh") -> tuple[Any, Any]:
    """x (...) -> out (...); the tanh form in one pass (saving σ(2u)), the exact (erf) form by the Array API op"""
    if form != "tanh":
        out, cache = ops.gelu_forward(bk, x, form)
        return out, (None, None, cache)
    x = bk.contiguous(x)
    out, sig = bk.xp.empty_like(x), bk.xp.empty_like(x)
    kernel(bk, "gelu_forward")(bk.pointer(out), bk.pointer(sig), bk.pointer(x), math.prod(x.shape))
    return out, (x, sig, None)


@_through_float32("all")
def gelu_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    x, sig, array_api_cache = cache
    if x is None:
        return ops.gelu_backward(bk, dout, array_api_cache)
    dout = bk.contiguous(dout)
    dx = bk.xp.empty_like(x)
    kernel(bk, "gelu_backward")(bk.pointer(dx), bk.pointer(dout), bk.pointer(x), bk.pointer(sig), math.prod(x.shape))
    return dx


@_through_float32("out")
def layernorm_forward(bk: Backend, x: Any, w: Any, b: Any = None, eps: float = 1e-5) -> tuple[Any, Any]:
    """x (...,C), w (C,), b (C,) or None -> out (...,C); saves x, mean and rstd (N,) like llm.c"""
    xp = bk.xp
    C = x.shape[-1]
    ops.checks.expect(tuple(w.shape) == (C,), "layernorm_forward", f"w must be ({C},), got {tuple(w.shape)}")
    x = bk.contiguous(x)
    N = math.prod(x.shape) // C
    out = xp.empty_like(x)
    mean, rstd = (xp.empty((N,), dtype=x.dtype, device=bk.device) for _ in range(2))
    bias = 0 if b is None else bk.pointer(b)
    args = (bk.pointer(out), bk.pointer(mean), bk.pointer(rstd), bk.pointer(x), bk.pointer(w), bias, N, C, eps)
    kernel(bk, "layernorm_forward")(*args)
    return out, (x, mean, rstd, w, b is not None)


@_through_float32("all")
def layernorm_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (...,C) -> dx (...,C), dw (C,), db (C,) or None"""
    xp = bk.xp
    x, mean, rstd, w, has_bias = cache
    dout = bk.contiguous(dout)
    C = w.shape[0]
    dx, dw = xp.empty_like(x), xp.empty_like(w)
    db = xp.empty_like(w) if has_bias else None
    pointers = [bk.pointer(a) if a is not None else 0 for a in (dx, dw, db, dout, x, mean, rstd, w)]
    kernel(bk, "layernorm_backward")(*pointers, math.prod(x.shape) // C, C)
    return dx, dw, db


@_through_float32("none")
def cross_entropy_forward(bk: Backend, logits: Any, targets: Any, ignore_index: int = -100) -> tuple[Any, Any]:
    """logits (...,V), targets (...) int -> loss () (see llmscratch.ops.cross_entropy_forward), in one pass that
    also checks the targets' range"""
    xp = bk.xp
    V = logits.shape[-1]
    cross_entropy.check_targets(logits, targets)
    ops.checks.expect_integers(bk, targets, "cross_entropy_forward")
    z = bk.contiguous(xp.reshape(logits, (-1, V)))  # (N,V)
    y = bk.contiguous(xp.reshape(xp.astype(targets, xp.int64, copy=False), (-1,)))  # (N,)
    probs = xp.empty_like(z)
    loss_sum, kept_and_bad = ctypes.c_double(), (ctypes.c_int64 * 2)()
    pointers = (bk.pointer(probs), ctypes.addressof(loss_sum), ctypes.addressof(kept_and_bad), bk.pointer(z))
    kernel(bk, "cross_entropy_forward")(*pointers, bk.pointer(y), z.shape[0], V, ignore_index)
    kept, bad = kept_and_bad
    if bad >= 0:
        raise ops.checks.id_out_of_range("cross_entropy_forward", int(y[bad]), V)
    n = max(kept, 1)  # every target ignored: loss 0 with a zero gradient
    loss = xp.asarray(loss_sum.value / n, dtype=bk.dtype, device=bk.device)
    return loss, (probs, y, n, ignore_index, logits.shape)


@_through_float32("all")
def cross_entropy_backward(bk: Backend, dloss: Any, cache: Any) -> Any:
    """dloss () or float -> dlogits (...,V)"""
    probs, y, n, ignore_index, shape = cache
    dz = bk.xp.empty_like(probs)
    N, V = probs.shape
    pointers = (bk.pointer(dz), bk.pointer(probs), bk.pointer(y))
    kernel(bk, "cross_entropy_backward")(*pointers, N, V, ignore_index, float(dloss) / n)
    return bk.xp.reshape(dz, shape)


def _pointers(bk: Backend, arrays: Sequence[Any]) -> Any:
    """A C array of the arrays' addresses (void*[n])."""
    return (ctypes.c_void_p * len(arrays))(*(bk.pointer(a) for a in arrays))


def _sizes(arrays: Sequence[Any]) -> Any:
    """A C array of the arrays' element counts (int64[n])."""
    return (ctypes.c_int64 * len(arrays))(*(math.prod(a.shape) for a in arrays))


def _float32_arrays(bk: Backend, arrays: Sequence[Any]) -> Backend | None:
    """The backend whose kernels fit the arrays: bk itself in float32/float64, its float32 twin for a 16-bit
    backend's float32 arrays (master weights), None for 16-bit arrays (then the Array API op serves)."""
    if bk.dtype_name not in HALF_DTYPES:
        return bk
    twin = _float32_twin(bk.name, bk.device_label)
    return twin if all(a.dtype == twin.dtype for a in arrays) else None


def grad_norm(bk: Backend, grads: Sequence[Any]) -> Any:
    """‖g‖ over all the gradients (see llmscratch.ops.adamw.grad_norm), in one pass, summed in float64."""
    if (wide := _float32_arrays(bk, grads)) is None:
        return adamw.grad_norm(bk, grads)
    bk = wide
    grads = [bk.contiguous(g) for g in grads]
    total = ctypes.c_double()
    kernel(bk, "sum_of_squares")(_pointers(bk, grads), _sizes(grads), len(grads), ctypes.addressof(total))
    return bk.xp.asarray(math.sqrt(total.value), dtype=bk.dtype, device=bk.device)


def adamw_update(
    bk: Backend,
    params: Sequence[Any],
    grads: Sequence[Any],
    ms: Sequence[Any],
    vs: Sequence[Any],
    decays: Sequence[float],
    step: adamw.AdamWStep,
    grad_scale: Any = None,
) -> adamw.Updated:
    """Every tensor's AdamW update in place (see llmscratch.ops.adamw.adamw_update), in one pass over them all."""
    if (wide := _float32_arrays(bk, [*params, *grads])) is None:
        return adamw.adamw_update(bk, params, grads, ms, vs, decays, step, grad_scale)
    bk = wide
    grads = [bk.contiguous(g) for g in grads]
    real = ctypes.c_float if bk.dtype_name == "float32" else ctypes.c_double
    tables = [_pointers(bk, arrays) for arrays in (params, grads, ms, vs)]
    scale = 1.0 if grad_scale is None else float(grad_scale)  # × 1.0 is exact: the same bits as no scaling
    kernel(bk, "adamw_step")(*tables, _sizes(params), (real * len(decays))(*decays), len(params), scale, *step)
    return adamw.Updated(list(params), list(ms), list(vs))


def _heads(bk: Backend, x: Any) -> Any:
    """x (B,heads,T,D) as is where its rows of D are contiguous (views of a QKV projection are), else a copy."""
    return x if bk.strides(x)[-1] == 1 or x.shape[-1] == 1 else bk.contiguous(x)


def _empty_heads(bk: Backend, B: int, heads: int, T: int, D: int) -> Any:
    """An uninitialised (B,heads,T,D) view of a (B,T,heads,D) array: the heads land in the (B,T,C) layout."""
    xp = bk.xp
    return xp.permute_dims(xp.empty((B, T, heads, D), dtype=bk.dtype, device=bk.device), (0, 2, 1, 3))


def _stride_table(bk: Backend, *arrays: Any) -> Any:
    """The (batch, head, time) strides of (B,heads,T,D) arrays, as the int64 table the tiled kernels read."""
    return (ctypes.c_int64 * (3 * len(arrays)))(*(s for a in arrays for s in bk.strides(a)[:3]))


@_through_float32("out")
def tiled_attention_forward(
    bk: Backend, q: Any, k: Any, v: Any, causal: bool = True, key_mask: Any = None, scale: float | None = None
) -> tuple[Any, Any]:
    """q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,D), key_mask (B,S) bool or None -> out (B,H,T,D)

    The whole attention in one C++ pass per (batch, kv head), on register tiles; out is a view of a (B,T,H,D)
    array, so the merge of the heads that follows costs no copy.
    """
    xp = bk.xp
    B, H, Hkv, T, S, D = check_attention_inputs(q, k, v, key_mask, "cpu-tiled attention")
    s = 1.0 / math.sqrt(D) if scale is None else scale
    q, k, v = (_heads(bk, a) for a in (q, k, v))
    lanes = cpu_build.library().vector_bytes() // (4 if bk.dtype_name == "float32" else 8)  # one vector of the CPU
    S_padded = -(-S // lanes) * lanes
    out = _empty_heads(bk, B, H, T, D)
    probs = xp.empty((B, H, T, S_padded), dtype=bk.dtype, device=bk.device)
    keep = None
    if key_mask is not None:  # padded like the rows of probs: the kernel reads whole vectors of it
        keep = xp.zeros((B, S_padded), dtype=xp.uint8, device=bk.device)
        keep[:, :S] = xp.astype(key_mask, xp.uint8)
    strides = _stride_table(bk, q, k, v, out)
    pointers = [bk.pointer(a) for a in (out, probs, q, k, v)] + [0 if keep is None else bk.pointer(keep)]
    kernel(bk, "attention_tiled_forward")(*pointers, B, H, Hkv, T, S, D, ctypes.addressof(strides), int(causal), s)
    return out, (q, k, v, probs, causal, s)


@_through_float32("all")
def tiled_attention_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (B,H,T,D) -> dq (B,H,T,D), dk (B,Hkv,S,D), dv (B,Hkv,S,D), views of (B,T,heads,D) arrays"""
    q, k, v, probs, causal, s = cache
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    dout = _heads(bk, dout)
    dq, dk, dv = _empty_heads(bk, B, H, T, D), _empty_heads(bk, B, Hkv, S, D), _empty_heads(bk, B, Hkv, S, D)
    strides = _stride_table(bk, dout, q, k, v, dq, dk, dv)
    pointers = [bk.pointer(a) for a in (dq, dk, dv, dout, probs, q, k, v)]
    kernel(bk, "attention_tiled_backward")(*pointers, B, H, Hkv, T, S, D, ctypes.addressof(strides), int(causal), s)
    return dq, dk, dv
