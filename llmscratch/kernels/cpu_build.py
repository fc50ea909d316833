"""Building the fused C++ CPU kernels (cpu/fused.cpp): compile once per machine, load once per process.

The C++ file, with the exports generated from the kernel table (cpu_signatures.py), is compiled on first use by
the system's C++ compiler ($CXX, else c++ / g++ / clang++) with -O3 -march=native into the llmscratch cache
(one library per source, compiler, flags and CPU) and loaded with ctypes. Without a compiler ``unavailable()``
says why, and ops="auto" / attention="auto" keep the Array API versions.

Builds of the one source:
- "openmp" (-fopenmp) splits the loops across OpenMP threads, for numpy and torch alike (with torch loaded
  first it binds to torch's OpenMP runtime, whose threads then stay warm for torch's own ops in between);
  on numpy the BLAS gives up its own threads meanwhile (``Backend.make_room_for_openmp``);
- "serial" (-fopenmp-simd) runs every kernel on the calling thread, where -fopenmp does not build;
- each for the CPU's native vector width (64 bytes with AVX-512, else 32) or, with LLMSCRATCH_CPU_ISA=avx2
  on an AVX-512 CPU, AVX2's: the code is width-generic, so both paths build and are tested on such a CPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from ..backends import HALF_DTYPES, Backend
from ..util.errors import BackendError
from ..util.paths import cache_dir
from .cpu_signatures import KERNELS, SOURCE, SUFFIX, argtypes, exported_name, exports

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
BACKENDS = ("numpy", "torch")


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
def library_path(build: str, isa_name: str) -> Path | None:
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
    compiler, target = _compiler(), library_path(build, isa_name)
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
        for dtype_name in SUFFIX:
            fn = getattr(lib, exported_name(name, dtype_name))
            fn.argtypes, fn.restype = argtypes(name, dtype_name), None
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


def threaded() -> ctypes.CDLL | None:
    """The openmp build where it builds, else None (then the serial one serves)."""
    return _build("openmp", isa())[0]


def library_in_use() -> Path | None:
    """Where the library the kernels run from lives: the openmp build where it builds, else the serial one."""
    return library_path("openmp" if threaded() else "serial", isa())


def kernel(bk: Backend, name: str) -> Any:
    """The kernel for bk's dtype, from the openmp build where it builds, else the serial one."""
    openmp = threaded()
    if openmp is not None:
        bk.make_room_for_openmp()
    return getattr(openmp or library(), exported_name(name, bk.dtype_name))
