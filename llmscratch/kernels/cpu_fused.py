"""Fused CPU kernels (cpu/fused.cpp) for the numpy and torch backends on the CPU.

Each function here has the signature of the Array API op it stands in for (``llmscratch.ops``) and computes
the same math in one or two passes over memory instead of one per operator, and a GEMM for the linear
layers: the "cpu-fused" op set (``GPTConfig.ops``) and the "cpu-tiled" attention kernel. The C++ file is
compiled on first use by the system's C++ compiler ($CXX, else c++ / g++ / clang++) with -O3 -march=native
into the llmscratch cache (one library per source, compiler, flags and CPU) and loaded with ctypes. Without
a compiler ``unavailable()`` says why, and ops="auto" / attention="auto" keep the Array API versions.

Two builds of the one source: "serial" for numpy, and "openmp" for torch, which splits the loops across
torch's own OpenMP threads (loaded only once torch is, it binds to torch's OpenMP runtime) and keeps those
threads warm for the matmuls in between; where it does not build, torch uses the serial one too.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .. import ops
from ..backends import Backend
from ..data import cache_dir
from ..errors import BackendError
from ..ops import cross_entropy
from ..ops.attention import check_attention_inputs

SOURCE = Path(__file__).parent / "cpu" / "fused.cpp"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
BUILDS = {"serial": "-fopenmp-simd", "openmp": "-fopenmp"}  # only `omp simd` counts / every OpenMP pragma
SUFFIX = {"float32": "f32", "float64": "f64"}
BACKENDS = ("numpy", "torch")

# argument kinds of each exported kernel: p pointer, i int64, f float (of the kernel's dtype)
SIGNATURES = {
    "gelu_forward": "pppi",
    "gelu_backward": "ppppi",
    "layernorm_forward": "ppppppiif",
    "layernorm_backward": "ppppppppii",
    "matmul": "ppppiiiiiii",
    "cross_entropy_forward": "pppppiii",
    "cross_entropy_backward": "pppiiif",
    "sum_of_squares": "ppip",
    "adamw_step": "ppppppiffffff",
    "attention_tiled_forward": "ppppppiiiiiipif",
    "attention_tiled_backward": "ppppppppiiiiiipif",
}


def _compiler() -> str | None:
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((path for c in candidates if (path := shutil.which(c))), None)


def _cpu_name() -> str:
    """The CPU model and features: -march=native code must only ever run on the kind of CPU it was built for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return "\n".join(next((x for x in lines if x.startswith(key)), "") for key in ("model name", "flags"))


def library() -> ctypes.CDLL:
    """The compiled (serial) kernels; BackendError (one line, the same every time) if they cannot be built here."""
    lib, error = _build("serial")
    if lib is None:
        raise BackendError(error)
    return lib


def compiles() -> bool:
    """Whether the kernels are compiled (or can be) on this machine."""
    return _build("serial")[0] is not None


@cache
def _build(build: str) -> tuple[ctypes.CDLL | None, str]:
    """Compile once per machine into the cache (atomically), load once per process; (None, why) on failure."""
    compiler = _compiler()
    if compiler is None:
        return None, "the cpu-fused kernels need a C++ compiler (install g++ or set $CXX); use ops='array-api'"
    flags = (*FLAGS, BUILDS[build])
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, version, *flags, _cpu_name()]).encode()).hexdigest()
    target = cache_dir() / "kernels" / f"cpu-fused-{build}-{key[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cpu-fused-", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            result = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True)
            if result.returncode != 0:
                first = (result.stderr.strip().splitlines() or ["no output"])[0]
                return None, f"compiling the cpu-fused kernels with {compiler} failed ({first}); use ops='array-api'"
            os.replace(tmp, target)  # atomic: a concurrent process sees no library or the whole one
        finally:
            Path(tmp).unlink(missing_ok=True)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        return None, f"cannot load the cpu-fused kernels from {target} ({e}); delete that file to rebuild it"
    for name, kinds in SIGNATURES.items():
        for dtype_name, suffix in SUFFIX.items():
            real = ctypes.c_float if dtype_name == "float32" else ctypes.c_double
            kind = {"p": ctypes.c_void_p, "i": ctypes.c_int64, "f": real}
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = [kind[k] for k in kinds]
            fn.restype = None
    lib.vector_bytes.argtypes, lib.vector_bytes.restype = [], ctypes.c_int64
    return lib, ""


def runs(backend_name: str, device: str | None, dtype: str) -> bool:
    """Whether the kernels run there: numpy or torch, on the CPU, float32 or float64, compiled."""
    return backend_name in BACKENDS and device in (None, "cpu") and dtype in SUFFIX and compiles()


def unavailable(bk: Backend) -> str | None:
    """Why the cpu-fused kernels (op set and cpu-tiled attention) cannot run on ``bk``, or None when they can."""
    if bk.name not in BACKENDS or bk.is_gpu:
        return f"the cpu-fused kernels run on {' and '.join(BACKENDS)} on the CPU, not on {bk.name} on {bk.device}"
    if bk.dtype_name not in SUFFIX:
        return f"the cpu-fused kernels compute in float32 or float64, not {bk.dtype_name}"
    lib, error = _build("serial")
    return None if lib is not None else error.partition("; use")[0]


def _threaded(bk: Backend) -> ctypes.CDLL | None:
    """The openmp build where bk is torch and it builds (it runs on torch's OpenMP threads), else None."""
    return _build("openmp")[0] if bk.name == "torch" else None


def _kernel(bk: Backend, name: str) -> Any:
    """The kernel for bk's dtype, from the openmp build on torch where it builds, else the serial one."""
    return getattr(_threaded(bk) or library(), f"{name}_{SUFFIX[bk.dtype_name]}")


FEW_ROWS = 64  # below this many rows torch's own matmul wins (measured for the 384..1536-wide layers)


def matmul(bk: Backend, a: Any, b: Any, bias: Any = None) -> Any:
    """a (M,K), b (K,N), bias (N,) or None -> a @ b + bias (M,N).

    On torch the C++ GEMM (``gemm``), threaded on torch's OpenMP threads: in a training step it beat torch's
    own matmul (MKL) on the model's layers (benchmarks/README.md). A few rows (decoding: one token per
    sequence) go to torch's matmul, several times faster there. numpy keeps its BLAS, which runs on every
    core, where the kernels here run on one.
    """
    if _threaded(bk) is None or a.shape[0] < FEW_ROWS:
        return ops.matmul(bk, a, b, bias)
    return gemm(bk, a, b, bias)


def gemm(bk: Backend, a: Any, b: Any, bias: Any = None) -> Any:
    """The C++ GEMM on torch's threads: a and b read through their strides."""
    (M, K), N = a.shape, b.shape[1]
    if 1 not in bk.strides(b):  # the kernel reads B by its rows or by its columns: one must be contiguous
        b = bk.contiguous(b)
    out = bk.xp.empty((M, N), dtype=bk.dtype, device=bk.device)
    bias_pointer = 0 if bias is None else bk.pointer(bk.contiguous(bias))
    pointers = (bk.pointer(out), bk.pointer(a), bk.pointer(b), bias_pointer)
    _kernel(bk, "matmul")(*pointers, M, N, K, *bk.strides(a), *bk.strides(b))
    return out


def gelu_forward(bk: Backend, x: Any, form: str = "tanh") -> tuple[Any, Any]:
    """x (...) -> out (...); the tanh form in one pass (saving σ(2u)), the exact (erf) form by the Array API op"""
    if form != "tanh":
        out, cache = ops.gelu_forward(bk, x, form)
        return out, (None, None, cache)
    x = bk.contiguous(x)
    out, sig = bk.xp.empty_like(x), bk.xp.empty_like(x)
    _kernel(bk, "gelu_forward")(bk.pointer(out), bk.pointer(sig), bk.pointer(x), math.prod(x.shape))
    return out, (x, sig, None)


def gelu_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    x, sig, array_api_cache = cache
    if x is None:
        return ops.gelu_backward(bk, dout, array_api_cache)
    dout = bk.contiguous(dout)
    dx = bk.xp.empty_like(x)
    _kernel(bk, "gelu_backward")(bk.pointer(dx), bk.pointer(dout), bk.pointer(x), bk.pointer(sig), math.prod(x.shape))
    return dx


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
    _kernel(bk, "layernorm_forward")(*args)
    return out, (x, mean, rstd, w, b is not None)


def layernorm_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (...,C) -> dx (...,C), dw (C,), db (C,) or None"""
    xp = bk.xp
    x, mean, rstd, w, has_bias = cache
    dout = bk.contiguous(dout)
    C = w.shape[0]
    dx, dw = xp.empty_like(x), xp.empty_like(w)
    db = xp.empty_like(w) if has_bias else None
    pointers = [bk.pointer(a) if a is not None else 0 for a in (dx, dw, db, dout, x, mean, rstd, w)]
    _kernel(bk, "layernorm_backward")(*pointers, math.prod(x.shape) // C, C)
    return dx, dw, db


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
    _kernel(bk, "cross_entropy_forward")(*pointers, bk.pointer(y), z.shape[0], V, ignore_index)
    kept, bad = kept_and_bad
    if bad >= 0:
        raise ops.checks.id_out_of_range("cross_entropy_forward", int(y[bad]), V)
    n = max(kept, 1)  # every target ignored: loss 0 with a zero gradient
    loss = xp.asarray(loss_sum.value / n, dtype=bk.dtype, device=bk.device)
    return loss, (probs, y, n, ignore_index, logits.shape)


def cross_entropy_backward(bk: Backend, dloss: Any, cache: Any) -> Any:
    """dloss () or float -> dlogits (...,V)"""
    probs, y, n, ignore_index, shape = cache
    dz = bk.xp.empty_like(probs)
    N, V = probs.shape
    pointers = (bk.pointer(dz), bk.pointer(probs), bk.pointer(y))
    _kernel(bk, "cross_entropy_backward")(*pointers, N, V, ignore_index, float(dloss) / n)
    return bk.xp.reshape(dz, shape)


def _pointers(bk: Backend, arrays: Sequence[Any]) -> Any:
    """A C array of the arrays' addresses (void*[n])."""
    return (ctypes.c_void_p * len(arrays))(*(bk.pointer(a) for a in arrays))


def _sizes(arrays: Sequence[Any]) -> Any:
    """A C array of the arrays' element counts (int64[n])."""
    return (ctypes.c_int64 * len(arrays))(*(math.prod(a.shape) for a in arrays))


def grad_norm(bk: Backend, grads: Sequence[Any]) -> Any:
    """‖g‖ over all the gradients (see llmscratch.optim.grad_norm), in one pass, summed in float64."""
    grads = [bk.contiguous(g) for g in grads]
    total = ctypes.c_double()
    _kernel(bk, "sum_of_squares")(_pointers(bk, grads), _sizes(grads), len(grads), ctypes.addressof(total))
    return bk.xp.asarray(math.sqrt(total.value), dtype=bk.dtype, device=bk.device)


def adamw_update(
    bk: Backend,
    params: Sequence[Any],
    grads: Sequence[Any],
    ms: Sequence[Any],
    vs: Sequence[Any],
    decays: Sequence[float],
    b1: float,
    b2: float,
    step_size: float,
    rsqrt_bc2: float,
    eps: float,
    grad_scale: Any = None,
) -> None:
    """Every tensor's AdamW update in place (see llmscratch.optim.adamw_update), in one pass over them all."""
    grads = [bk.contiguous(g) for g in grads]
    real = ctypes.c_float if bk.dtype_name == "float32" else ctypes.c_double
    tables = [_pointers(bk, arrays) for arrays in (params, grads, ms, vs)]
    scale = 1.0 if grad_scale is None else float(grad_scale)  # × 1.0 is exact: the same bits as no scaling
    args = (len(params), scale, b1, b2, step_size, rsqrt_bc2, eps)
    _kernel(bk, "adamw_step")(*tables, _sizes(params), (real * len(decays))(*decays), *args)


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
    lanes = library().vector_bytes() // (4 if bk.dtype_name == "float32" else 8)  # one vector of the CPU
    S_padded = -(-S // lanes) * lanes
    out = _empty_heads(bk, B, H, T, D)
    probs = xp.empty((B, H, T, S_padded), dtype=bk.dtype, device=bk.device)
    keep = None
    if key_mask is not None:  # padded like the rows of probs: the kernel reads whole vectors of it
        keep = xp.zeros((B, S_padded), dtype=xp.uint8, device=bk.device)
        keep[:, :S] = xp.astype(key_mask, xp.uint8)
    strides = _stride_table(bk, q, k, v, out)
    pointers = [bk.pointer(a) for a in (out, probs, q, k, v)] + [0 if keep is None else bk.pointer(keep)]
    _kernel(bk, "attention_tiled_forward")(*pointers, B, H, Hkv, T, S, D, ctypes.addressof(strides), int(causal), s)
    return out, (q, k, v, probs, causal, s)


def tiled_attention_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (B,H,T,D) -> dq (B,H,T,D), dk (B,Hkv,S,D), dv (B,Hkv,S,D), views of (B,T,heads,D) arrays"""
    q, k, v, probs, causal, s = cache
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    dout = _heads(bk, dout)
    dq, dk, dv = _empty_heads(bk, B, H, T, D), _empty_heads(bk, B, Hkv, S, D), _empty_heads(bk, B, Hkv, S, D)
    strides = _stride_table(bk, dout, q, k, v, dq, dk, dv)
    pointers = [bk.pointer(a) for a in (dq, dk, dv, dout, probs, q, k, v)]
    _kernel(bk, "attention_tiled_backward")(*pointers, B, H, Hkv, T, S, D, ctypes.addressof(strides), int(causal), s)
    return dq, dk, dv
