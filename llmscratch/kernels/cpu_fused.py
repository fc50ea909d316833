"""Fused CPU kernels (cpu/fused.cpp) for the numpy and torch backends on the CPU.

Each function here has the signature of the Array API op it stands in for (``llmscratch.ops``) and computes
the same math in one or two passes over memory instead of one per operator, and a GEMM for the linear
layers: the "cpu-fused" op set (``GPTConfig.ops``) and the "cpu-tiled" attention kernel. The C++ file is
compiled on first use by the system's C++ compiler ($CXX, else c++ / g++ / clang++) with -O3 -march=native
into the llmscratch cache (one library per source, compiler, flags and CPU) and loaded with ctypes. Without
a compiler ``unavailable()`` says why, and ops="auto" / attention="auto" keep the Array API versions.

Builds of the one source:
- "openmp" (-fopenmp) splits the loops across OpenMP threads, for numpy and torch alike (with torch loaded
  first it binds to torch's OpenMP runtime, whose threads then stay warm for torch's own ops in between);
  on numpy the BLAS gives up its own threads meanwhile (``Backend.make_room_for_openmp``);
- "serial" (-fopenmp-simd) runs every kernel on the calling thread, where -fopenmp does not build;
- each for the CPU's native vector width (64 bytes with AVX-512, else 32) or, with LLMSCRATCH_CPU_ISA=avx2
  on an AVX-512 CPU, AVX2's: the code is width-generic, so both paths build and are tested on such a CPU.

The linear layers' matmul is the C++ GEMM or the vendor BLAS, whichever measured faster for the shape class
on this machine (gemm_choice.py). The kernels compute in float32 or float64; a 16-bit backend (torch
bfloat16 / float16) runs them on widened float32 inputs and rounds their results back (``_through_float32``),
while its vendor matmul multiplies in the 16-bit dtype itself.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from functools import cache, wraps
from pathlib import Path
from typing import Any

from .. import ops
from ..backends import HALF_DTYPES, Backend, get_backend
from ..ops import adamw, cross_entropy
from ..ops.attention import check_attention_inputs
from ..util.errors import BackendError
from ..util.paths import cache_dir
from .gemm_choice import GemmChoices

SOURCE = Path(__file__).parent / "cpu" / "fused.cpp"
# -fno-trapping-math: the kernels never read floating-point exception flags; without it GCC may not turn a
# loop's comparisons (the clamps in exp_approx) into vector selects unless AVX-512's masks are there, and with AVX2
# alone GELU's forward and the softmaxes stayed scalar, 10x slower (measured). It changes no result, unlike
# -ffast-math, which is not used.
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC")
BUILDS = {"serial": "-fopenmp-simd", "openmp": "-fopenmp"}  # only `omp simd` counts / every OpenMP pragma
# the vector width the kernels are compiled for: the CPU's widest (native), or AVX2's 32 bytes on a CPU that has
# AVX-512 too (LLMSCRATCH_CPU_ISA=avx2), so the narrower path is tested and measured on such a CPU as well
ISAS = {"native": (), "avx2": ("-mno-avx512f",)}
ISA_VARIABLE = "LLMSCRATCH_CPU_ISA"
SUFFIX = {"float32": "f32", "float64": "f64"}
BACKENDS = ("numpy", "torch")

# Each exported kernel's C++ parameters (T: float or double), written only here: the extern "C" wrappers
# name_f32 / name_f64 that call the templates in fused.cpp are generated from this table, and so are the ctypes
# argument types the calls below are checked against.
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
        "int64_t count, T grad_scale, T b1, T b2, T step_size, T rsqrt_bc2, T eps"
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


def exports() -> str:
    """The C++ that exports every kernel of KERNELS for float and double (appended to fused.cpp)."""
    lines = [f'#include "{SOURCE}"']
    for real, suffix in (("float", "f32"), ("double", "f64")):
        for name in KERNELS:
            params = _parameters(name)
            declared = ", ".join(f"{THE_FLOAT.sub(real, c_type)} {arg}" for c_type, arg in params)
            call = ", ".join(arg for _, arg in params)
            lines.append(f'extern "C" void {name}_{suffix}({declared}) {{ {name}<{real}>({call}); }}')
    return "\n".join(lines) + "\n"


def _ctype(c_type: str, real: Any) -> Any:
    if "*" in c_type:
        return ctypes.c_void_p
    return real if c_type == "T" else {"int64_t": ctypes.c_int64, "double": ctypes.c_double}[c_type]


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


def isa() -> str:
    """The instruction set the kernels are built for: native (the default) or avx2 (LLMSCRATCH_CPU_ISA)."""
    value = os.environ.get(ISA_VARIABLE, "native")
    if value not in ISAS:
        raise BackendError(f"{ISA_VARIABLE}={value!r}: use {' or '.join(ISAS)}")
    return value


def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (then the avx2 build is a different, narrower path than the native one)."""
    return " avx512f" in _cpu_name()


def library() -> ctypes.CDLL:
    """The compiled (serial) kernels; BackendError (one line, the same every time) if they cannot be built here."""
    lib, error = _build("serial", isa())
    if lib is None:
        raise BackendError(error)
    return lib


def compiles() -> bool:
    """Whether the kernels are compiled (or can be) on this machine."""
    return _build("serial", isa())[0] is not None


@cache
def _library_path(build: str, isa_name: str) -> Path | None:
    """Where the build of these kernels for this source, compiler, flags and CPU lives (None: no compiler)."""
    compiler = _compiler()
    if compiler is None:
        return None
    flags = (*FLAGS, *ISAS[isa_name], BUILDS[build])
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    text = "\n".join([SOURCE.read_text(), exports(), compiler, version, *flags, _cpu_name()])
    key = hashlib.sha256(text.encode()).hexdigest()
    return cache_dir() / "kernels" / f"cpu-fused-{build}-{isa_name}-{key[:16]}.so"


@cache
def _build(build: str, isa_name: str) -> tuple[ctypes.CDLL | None, str]:
    """Compile once per machine into the cache (atomically), load once per process; (None, why) on failure."""
    compiler, target = _compiler(), _library_path(build, isa_name)
    if compiler is None or target is None:
        return None, "the cpu-fused kernels need a C++ compiler (install g++ or set $CXX); use ops='array-api'"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cpu-fused-", suffix=".so", dir=target.parent)
        os.close(fd)
        flags = (*FLAGS, *ISAS[isa_name], BUILDS[build])
        try:
            command = [compiler, *flags, "-x", "c++", "-", "-o", tmp]
            result = subprocess.run(command, input=exports(), capture_output=True, text=True)
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
    for name in KERNELS:
        for dtype_name, suffix in SUFFIX.items():
            real = ctypes.c_float if dtype_name == "float32" else ctypes.c_double
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = [_ctype(c_type, real) for c_type, _ in _parameters(name)]
            fn.restype = None
    lib.vector_bytes.argtypes, lib.vector_bytes.restype = [], ctypes.c_int64
    return lib, ""


def runs(backend_name: str, device: str | None, dtype: str) -> bool:
    """Whether the kernels run there: numpy or torch, on the CPU, float32 or float64 (or a 16-bit dtype through
    float32), compiled."""
    return backend_name in BACKENDS and device in (None, "cpu") and dtype in (*SUFFIX, *HALF_DTYPES) and compiles()


def unavailable(bk: Backend) -> str | None:
    """Why the cpu-fused kernels (op set and cpu-tiled attention) cannot run on ``bk``, or None when they can."""
    if bk.name not in BACKENDS or bk.is_gpu:
        return f"the cpu-fused kernels run on {' and '.join(BACKENDS)} on the CPU, not on {bk.name} on {bk.device}"
    if bk.dtype_name not in (*SUFFIX, *HALF_DTYPES):
        return f"the cpu-fused kernels compute in float32 or float64, not {bk.dtype_name}"
    lib, error = _build("serial", isa())
    return None if lib is not None else error.partition("; use")[0]


def _threaded() -> ctypes.CDLL | None:
    """The openmp build where it builds, else None (then the serial one serves)."""
    return _build("openmp", isa())[0]


def _kernel(bk: Backend, name: str) -> Any:
    """The kernel for bk's dtype, from the openmp build where it builds, else the serial one."""
    threaded = _threaded()
    if threaded is not None:
        bk.make_room_for_openmp()
    return getattr(threaded or library(), f"{name}_{SUFFIX[bk.dtype_name]}")


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
            wide = _float32_twin(bk.name, str(bk.device))
            args = tuple(bk.widen(a) if getattr(a, "dtype", None) == bk.dtype else a for a in args)
            result = op(wide, *args, **kwargs)
            if round_back == "out":
                return bk.narrow(result[0]), result[1]
            if round_back == "all" and isinstance(result, tuple):
                return tuple(None if g is None else bk.narrow(g) for g in result)
            return bk.narrow(result) if round_back == "all" else result

        return run

    return wrap


def _choices() -> GemmChoices:
    return _gemm_choices(str(_library_path("openmp" if _threaded() else "serial", isa())))


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
    if _threaded() is not None:
        bk.make_room_for_openmp()  # before the vendor's products are timed
    candidates = {"own": lambda: gemm(bk, a, b, bias), "vendor": lambda: ops.matmul(bk, a, b, bias)}
    return candidates[_choices().choose(bk, a, b, candidates)]()


@_through_float32("all")
def gemm(bk: Backend, a: Any, b: Any, bias: Any = None) -> Any:
    """The C++ GEMM, on OpenMP threads where the openmp build runs: a and b read through their strides."""
    (M, K), N = a.shape, b.shape[1]
    if 1 not in bk.strides(b):  # the kernel reads B by its rows or by its columns: one must be contiguous
        b = bk.contiguous(b)
    out = bk.xp.empty((M, N), dtype=bk.dtype, device=bk.device)
    bias_pointer = 0 if bias is None else bk.pointer(bk.contiguous(bias))
    pointers = (bk.pointer(out), bk.pointer(a), bk.pointer(b), bias_pointer)
    _kernel(bk, "matmul")(*pointers, M, N, K, *bk.strides(a), *bk.strides(b))
    return out


@_through_float32("out")
def gelu_forward(bk: Backend, x: Any, form: str = "tanh") -> tuple[Any, Any]:
    """x (...) -> out (...); the tanh form in one pass (saving σ(2u)), the exact (erf) form by the Array API op"""
    if form != "tanh":
        out, cache = ops.gelu_forward(bk, x, form)
        return out, (None, None, cache)
    x = bk.contiguous(x)
    out, sig = bk.xp.empty_like(x), bk.xp.empty_like(x)
    _kernel(bk, "gelu_forward")(bk.pointer(out), bk.pointer(sig), bk.pointer(x), math.prod(x.shape))
    return out, (x, sig, None)


@_through_float32("all")
def gelu_backward(bk: Backend, dout: Any, cache: Any) -> Any:
    """dout (...) -> dx (...)"""
    x, sig, array_api_cache = cache
    if x is None:
        return ops.gelu_backward(bk, dout, array_api_cache)
    dout = bk.contiguous(dout)
    dx = bk.xp.empty_like(x)
    _kernel(bk, "gelu_backward")(bk.pointer(dx), bk.pointer(dout), bk.pointer(x), bk.pointer(sig), math.prod(x.shape))
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
    _kernel(bk, "layernorm_forward")(*args)
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
    _kernel(bk, "layernorm_backward")(*pointers, math.prod(x.shape) // C, C)
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
    _kernel(bk, "cross_entropy_forward")(*pointers, bk.pointer(y), z.shape[0], V, ignore_index)
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
    _kernel(bk, "cross_entropy_backward")(*pointers, N, V, ignore_index, float(dloss) / n)
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
    twin = _float32_twin(bk.name, str(bk.device))
    return twin if all(a.dtype == twin.dtype for a in arrays) else None


def grad_norm(bk: Backend, grads: Sequence[Any]) -> Any:
    """‖g‖ over all the gradients (see llmscratch.ops.adamw.grad_norm), in one pass, summed in float64."""
    if (wide := _float32_arrays(bk, grads)) is None:
        return adamw.grad_norm(bk, grads)
    bk = wide
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
    """Every tensor's AdamW update in place (see llmscratch.ops.adamw.adamw_update), in one pass over them all."""
    if (wide := _float32_arrays(bk, [*params, *grads])) is None:
        return adamw.adamw_update(bk, params, grads, ms, vs, decays, b1, b2, step_size, rsqrt_bc2, eps, grad_scale)
    bk = wide
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
    _kernel(bk, "attention_tiled_backward")(*pointers, B, H, Hkv, T, S, D, ctypes.addressof(strides), int(causal), s)
    return dq, dk, dv
