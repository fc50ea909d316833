"""CuPy on a CUDA GPU.

CuPy imports fine on a machine without a GPU, so availability is ``cupy.cuda.is_available()``, not the import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..util.errors import BackendError
from .base import Backend, PeakMemory


def cupy_unavailable_reason() -> str | None:
    """None when CuPy can run here; otherwise one line saying why not."""
    try:
        import cupy
    except ImportError:
        return "cupy is not installed; pip install 'llmscratch[cupy]' (needs an NVIDIA GPU and CUDA 12)"
    except Exception as e:  # a broken CUDA install can fail in many ways at import time
        return f"cupy failed to import ({type(e).__name__}: {e}); check the CUDA installation"
    try:
        if cupy.cuda.is_available():
            return None
    except Exception:  # is_available() can itself raise on a broken driver
        pass
    return (
        "cupy is installed but no usable CUDA GPU was found (cupy.cuda.is_available() is False); "
        "use backend='numpy' or 'torch'"
    )


def _device_index(device: Any) -> int:
    if device is None or device == "cuda":
        return 0
    if isinstance(device, int):
        return device
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BackendError(f"unknown cupy device {device!r}; use 'cuda', 'cuda:N' or an int")


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, device: Any, dtype_name: str) -> None:
        reason = cupy_unavailable_reason()
        if reason is not None:
            raise BackendError(reason)
        import cupy
        import cupyx
        from array_api_compat import cupy as xp

        index = _device_index(device)
        if index >= cupy.cuda.runtime.getDeviceCount():
            raise BackendError(
                f"device {device!r} does not exist; this machine has {cupy.cuda.runtime.getDeviceCount()} GPU(s)"
            )
        self.cupy, self.cupyx = cupy, cupyx
        dev = cupy.cuda.Device(index)
        dev.use()
        super().__init__(xp, dev, dtype_name, is_gpu=True)

    def _from_numpy(self, a: np.ndarray, dtype: Any) -> Any:
        return self.cupy.array(a, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def scatter_add_rows(self, out: Any, idx: Any, src: Any) -> Any:
        self.cupyx.scatter_add(out, idx, src)
        return out

    def erf(self, x: Any) -> Any:
        from cupyx.scipy.special import erf

        return erf(x)

    def generator(self, *seed: int) -> Any:
        state = np.random.SeedSequence(list(seed)).generate_state(1, np.uint64)[0]
        return self.cupy.random.default_rng(int(state))

    def uniform(self, gen: Any, shape: Any) -> Any:
        return gen.random(tuple(shape), dtype=self.dtype)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def free_memory(self) -> int | None:
        """The device's free memory plus what CuPy's pool holds unused (it hands that out first)."""
        pool = self.cupy.get_default_memory_pool()
        with self.device:
            free = self.cupy.cuda.runtime.memGetInfo()[0]
        return free + pool.free_bytes()

    @contextlib.contextmanager
    def peak_memory(self) -> Iterator[PeakMemory]:
        """The peak of CuPy's memory pool in use, followed allocation by allocation with a MemoryHook."""
        from cupy.cuda.memory_hook import MemoryHook

        pool = self.cupy.get_default_memory_pool()
        start = pool.used_bytes()

        class Peak(MemoryHook):
            name = "llmscratch_peak"

            def __init__(self) -> None:
                self.peak = start

            def malloc_postprocess(self, **kwargs: Any) -> None:
                self.peak = max(self.peak, pool.used_bytes())

        result, hook = PeakMemory(), Peak()
        self.synchronize()
        try:
            with hook:
                yield result
        finally:
            self.synchronize()
            result.bytes = hook.peak - start
