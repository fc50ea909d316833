"""The only package that knows numpy, torch, cupy and array-api-strict by name.

bk = get_backend("torch", device="cuda", dtype="float32")
bk.xp.matmul(a, b)              # everything the Array API standard has
bk.scatter_add_rows(out, i, s)  # ...and what it lacks (see base.Backend)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..util.errors import BackendError, did_you_mean
from .base import FLOAT_DTYPES, HALF_DTYPES, Backend, check_dtype

BACKENDS = ("numpy", "torch", "cupy", "strict")
BACKEND_HALF_DTYPES = {"torch": ("bfloat16", "float16"), "cupy": ("float16",)}  # CuPy has no bfloat16


def _backend_class(name: str) -> Callable[[Any, str], Backend]:
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend
    if name == "cupy":
        from .cupy_backend import CupyBackend

        return CupyBackend
    from .strict_backend import StrictBackend

    return StrictBackend


def get_backend(name: str | Backend = "numpy", device: Any = None, dtype: str = "float32") -> Backend:
    """Make the backend ``name`` on ``device`` computing in ``dtype`` ("float32" | "float64" | "bfloat16" |
    "float16"; the 16-bit ones where BACKEND_HALF_DTYPES lists them).

    Raises BackendError with a one-line reason when the backend, device or dtype cannot be used here.
    A Backend passed as ``name`` is returned as it is.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise BackendError(
            f"unknown backend {name!r}{did_you_mean(str(name), BACKENDS)}; "
            f"available here: {', '.join(available_backends())}"
        )
    cls = _backend_class(name)
    check_dtype(name, dtype, backends_with(dtype))
    return cls(device, dtype)


def backends_with(dtype: str) -> list[str]:
    """The backends that compute in a 16-bit ``dtype`` (BACKEND_HALF_DTYPES)."""
    return [name for name, dtypes in BACKEND_HALF_DTYPES.items() if dtype in dtypes]


def available_backends() -> list[str]:
    """The backend names that really work on this machine (cupy only with a usable GPU)."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except BackendError:
            continue
        names.append(name)
    return names


__all__ = [
    "BACKENDS",
    "BACKEND_HALF_DTYPES",
    "FLOAT_DTYPES",
    "HALF_DTYPES",
    "Backend",
    "available_backends",
    "backends_with",
    "get_backend",
]
