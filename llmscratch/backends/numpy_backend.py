"""NumPy on the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..util.errors import BackendError
from .base import Backend
from .host_memory import tune_host_allocator

_BLAS_LIMIT: Any = None  # the process-wide one-thread limit on NumPy's BLAS, once OpenMP kernels have run


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, device: Any, dtype_name: str) -> None:
        from array_api_compat import numpy as xp

        if device not in (None, "cpu"):
            raise BackendError(
                f"the numpy backend runs on the CPU only, not {device!r}; use backend='torch' or 'cupy' for a GPU"
            )
        super().__init__(xp, "cpu", dtype_name)
        tune_host_allocator()

    def _from_numpy(self, a: np.ndarray, dtype: Any) -> Any:
        return np.array(a, dtype=dtype, copy=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(x, copy=True)

    def contiguous(self, x: Any) -> Any:
        return np.ascontiguousarray(x)

    def pointer(self, x: Any) -> int:
        return x.ctypes.data

    def strides(self, x: Any) -> tuple[int, ...]:
        return tuple(s // x.itemsize for s in x.strides)

    def scatter_add_rows(self, out: Any, idx: Any, src: Any) -> Any:
        """np.add.at on flat indices idx·C + c (NumPy's fast 1-D path; 2-3x faster than row-wise add.at)."""
        C = out.shape[1]
        flat = (idx[:, None] * C + np.arange(C)).reshape(-1)
        np.add.at(out.reshape(-1), flat, src.reshape(-1))
        return out

    def erf(self, x: Any) -> Any:
        try:
            from scipy.special import erf
        except ImportError:
            return super().erf(x)
        return erf(x)

    def make_room_for_openmp(self) -> None:
        """NumPy's BLAS (OpenBLAS) keeps its own threads, which spin on the cores beside an OpenMP team between
        calls: a product that takes 0.6 ms took 16 ms right after the BLAS had run (measured). So once OpenMP
        kernels run in this process, the BLAS runs on one thread (threadpoolctl), and its products are
        measured that way against the kernels' GEMM (gemm_choice.py)."""
        global _BLAS_LIMIT
        if _BLAS_LIMIT is None:
            from threadpoolctl import threadpool_limits

            _BLAS_LIMIT = threadpool_limits(1, user_api="blas")

    def threads(self) -> int:
        return 1 if _BLAS_LIMIT is not None else super().threads()

    def uniform(self, gen: Any, shape: Any) -> Any:
        return gen.random(tuple(shape), dtype=self.dtype)
