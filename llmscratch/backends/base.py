"""The Backend object: one array library, one device, one float dtype, and what the Array API standard lacks.

A backend is made once per model (``get_backend``) and handed to every op as ``bk``; ops use ``bk.xp`` (the
array-api-compat namespace) for everything the standard has, and the methods below for what it does not.
The base class implements each extra in pure Array API, which is what the ``strict`` backend runs; the numpy,
torch and cupy subclasses override them with their library's fast native routine.
"""

from __future__ import annotations

import contextlib
import os
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..util.atomic import size_text
from ..util.errors import BackendError
from ..util.tensors import bfloat16 as host_bfloat16
from .erf import erf_array_api

FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")
HALF_DTYPES = ("bfloat16", "float16")  # 16-bit floats: sums over them accumulate in float32 (``wide_dtype``)

# Rows of the one-hot matrix built at a time by the pure Array API scatter-add (bounds its memory).
_ONE_HOT_CHUNK = 4096


class Backend:
    """One array library on one device with one float dtype.

    Attributes: ``name`` ("numpy" | "torch" | "cupy" | "strict"), ``xp`` (Array API namespace), ``device``
    (the library's own device object), ``dtype`` (an ``xp`` float dtype), ``dtype_name``, ``is_gpu``,
    ``index_dtype`` (int64, used for token ids), ``wide_dtype`` (float32 for a 16-bit dtype, else ``dtype``: what
    softmax, normalisation statistics, the loss and sums of many terms accumulate in).
    """

    name: str = "base"
    compiles: bool = False  # whether ``compile`` makes one program of a whole function (JAX)

    def __init__(self, xp: Any, device: Any, dtype_name: str, is_gpu: bool = False) -> None:
        self.xp = xp
        self.device = device
        self.dtype_name = dtype_name
        self.dtype = getattr(xp, dtype_name)
        self.index_dtype = xp.int64
        self.wide_dtype = xp.float32 if dtype_name in HALF_DTYPES else self.dtype
        self.is_gpu = is_gpu
        self.check_memory = True  # memory_shortfall() compares needs with what is free (--no-check-memory: not)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={str(self.device)!r}, dtype={self.dtype_name!r})"

    # ---- arrays in and out -------------------------------------------------------------------------------

    @property
    def device_label(self) -> str:
        """The device as reports name it: "cpu", "cuda", "cuda:1", ... (the same word on every library)."""
        return str(self.device)

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """Python numbers/lists or a NumPy array -> an array on this backend's device (floats in ``dtype``)."""
        return self.from_numpy(np.asarray(data), dtype)

    def from_numpy(self, a: np.ndarray, dtype: Any = None) -> Any:
        """Copy a NumPy array to this backend. Floats become ``dtype`` (default: the backend's), ints int64."""
        a = np.asarray(a)
        if a.dtype == np.bool_:
            dtype = self.xp.bool
        elif dtype is None:
            dtype = self.index_dtype if a.dtype.kind in "iu" else self.dtype
        return self._from_numpy(a, dtype)

    def _from_numpy(self, a: np.ndarray, dtype: Any) -> Any:
        return self.xp.asarray(a, dtype=dtype, device=self.device, copy=True)

    def upload(self, a: np.ndarray) -> Any:
        """A batch's integer array on the device, for the step after this one (training.feed): on CUDA
        through pinned memory without the host waiting for the copy; elsewhere ``from_numpy``."""
        return self.from_numpy(a)

    def to_numpy(self, x: Any) -> np.ndarray:
        """An array of this backend -> a NumPy array on the host (bfloat16, which NumPy lacks, is upcast to float32)."""
        if isinstance(x, np.generic):  # a NumPy scalar (what NumPy's ops give for 0-d results) has no DLPack
            return np.asarray(x).copy()
        return np.from_dlpack(x).copy()

    def to_host(self, arrays: dict[str, Any]) -> dict[str, np.ndarray]:
        """Named arrays -> NumPy arrays to store, bfloat16 kept as ml_dtypes' bfloat16 (not upcast)."""
        bfloat16 = getattr(self.xp, "bfloat16", None)
        host = {}
        for name, a in arrays.items():
            value = self.to_numpy(a)
            host[name] = value.astype(host_bfloat16()) if bfloat16 is not None and a.dtype == bfloat16 else value
        return host

    def from_host(self, host: dict[str, np.ndarray]) -> dict[str, Any]:
        """Named NumPy arrays (a file's tensors) -> arrays on this backend in its dtype (16-bit floats go
        through float64 on the host)."""
        return {
            n: self.from_numpy(a.astype(np.float64) if a.dtype.itemsize == 2 else a, self.dtype)
            for n, a in host.items()
        }

    def zeros(self, shape: Sequence[int], dtype: Any = None) -> Any:
        return self.xp.zeros(tuple(shape), dtype=self.dtype if dtype is None else dtype, device=self.device)

    def widen(self, x: Any) -> Any:
        """x in ``wide_dtype`` (a float32 copy of a 16-bit array; x itself otherwise), to accumulate in."""
        return x if x.dtype == self.wide_dtype else self.xp.astype(x, self.wide_dtype)

    def narrow(self, x: Any) -> Any:
        """x in the compute dtype (rounds a widened result back; x itself when it already is)."""
        return x if x.dtype == self.dtype else self.xp.astype(x, self.dtype)

    def item(self, x: Any) -> float:
        """A 0-d array -> a Python float (on a GPU this waits for the result)."""
        return float(self.to_numpy(x))

    # ---- what the standard lacks -------------------------------------------------------------------------

    def assign(self, x: Any, index: Any, value: Any) -> Any:
        """x with x[index] = value: written in place and x returned where the library allows (every library
        but JAX, whose arrays are immutable and which returns a new array). Use the returned array."""
        x[index] = value
        return x

    def scatter_add_rows(self, out: Any, idx: Any, src: Any) -> Any:
        """out[idx[n], :] += src[n, :] for every n (repeated ids accumulate). out (V,C), idx (N,), src (N,C).

        Returns the updated array (in place where the library allows). Pure Array API form: for a chunk
        of rows v0..v1, onehot (v1-v0, N) = (v == idx) and out[v0:v1] += onehot @ src.
        """
        xp = self.xp
        V = out.shape[0]
        for v0 in range(0, V, _ONE_HOT_CHUNK):
            v1 = min(V, v0 + _ONE_HOT_CHUNK)
            rows = xp.arange(v0, v1, dtype=idx.dtype, device=self.device)
            onehot = xp.astype(rows[:, None] == idx[None, :], src.dtype)  # (v1-v0, N)
            out = self.assign(out, (slice(v0, v1), ...), out[v0:v1, ...] + onehot @ src)
        return out

    def erf(self, x: Any) -> Any:
        """The error function, elementwise (the standard has none)."""
        return erf_array_api(self.xp, x)

    def generator(self, *seed: int) -> Any:
        """A native random generator seeded from a tuple of ints (e.g. (seed, step)), for dropout/sampling."""
        return np.random.default_rng(np.random.SeedSequence(list(seed)))

    def uniform(self, gen: Any, shape: Sequence[int]) -> Any:
        """Uniform [0, 1) numbers of the backend dtype, drawn from ``gen`` (made by ``generator``)."""
        return self.from_numpy(gen.random(tuple(shape)))

    def contiguous(self, x: Any) -> Any:
        """``x`` laid out C-contiguous in memory (itself if it already is), for kernels that take raw pointers."""
        raise BackendError(f"the {self.name} backend does not expose raw memory; use ops='array-api'")

    def pointer(self, x: Any) -> int:
        """The address of a C-contiguous host array's first element (for ctypes kernels)."""
        raise BackendError(f"the {self.name} backend does not expose raw memory; use ops='array-api'")

    def strides(self, x: Any) -> tuple[int, ...]:
        """How many elements apart consecutive indices along each axis of a host array are (for ctypes kernels)."""
        raise BackendError(f"the {self.name} backend does not expose raw memory; use ops='array-api'")

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (arrays in, arrays out, no host reads) compiled into one program, where the library has a
        compiler that takes whole functions (JAX); a one-line BackendError elsewhere."""
        raise BackendError(
            f"the {self.name} backend does not compile whole steps; --compile (compile=True) needs backend jax"
        )

    def is_traced(self, x: Any) -> bool:
        """Whether x stands for values not known yet: an argument, or what follows from one, inside a function
        being compiled (``compile``). Its values cannot be read on the host there."""
        return False

    def make_room_for_openmp(self) -> None:
        """Called before OpenMP kernels (llmscratch/kernels/cpu_fused.py) first run on this backend's arrays:
        a library with a thread pool of its own lets them have the cores. Nothing to do by default."""

    def threads(self) -> int:
        """How many CPU threads the library computes on (the cores this process may use)."""
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def synchronize(self) -> None:
        """Wait for queued device work to finish (honest GPU timing). A no-op on the CPU."""

    def free_memory(self) -> int | None:
        """Bytes the arrays can still have: the host's available memory (Linux's MemAvailable), a GPU's
        free memory; None where it cannot be read."""
        return host_available_memory()

    @property
    def itemsize(self) -> int:
        """Bytes per number of the backend's float dtype (2 for a 16-bit one, 4, 8)."""
        return self.xp.finfo(self.dtype).bits // 8

    def memory_shortfall(self, need: int) -> str | None:
        """None when ``need`` bytes fit in the free memory (or it cannot be read, or ``check_memory`` is off);
        else what is free, in words, for a caller's one-line refusal: "this machine has 3.1 GB free"."""
        free = self.free_memory() if self.check_memory else None
        if free is None or need <= free:
            return None
        return f"{'the GPU' if self.is_gpu else 'this machine'} has {size_text(free)} free"

    @contextlib.contextmanager
    def peak_memory(self) -> Iterator[PeakMemory]:
        """``with bk.peak_memory() as m: ...`` sets m.bytes to the most memory allocated inside the block beyond
        what existed before it (None where it cannot be measured). Host arrays: tracemalloc, which NumPy
        reports its buffers to."""
        result = PeakMemory()
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        try:
            yield result
        finally:
            result.bytes = tracemalloc.get_traced_memory()[1] - start
            if not was_tracing:
                tracemalloc.stop()


def host_available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux): what can be allocated without swapping; None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """Filled in by ``Backend.peak_memory`` when its block ends."""

    bytes: int | None = None


def check_dtype(backend_name: str, dtype: str, have: Sequence[str]) -> None:
    """Refuse a dtype the backend cannot compute in; ``have``: the backends that have a 16-bit dtype."""
    if dtype not in FLOAT_DTYPES:
        raise BackendError(f"unsupported dtype {dtype!r}; choose one of {', '.join(FLOAT_DTYPES)}")
    if dtype in HALF_DTYPES and backend_name not in have:
        raise BackendError(
            f"the {backend_name} backend has no {dtype}; use dtype='float32', or a backend that has it: "
            f"{', '.join(have)}"
        )
