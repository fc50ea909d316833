"""Backends, registered by name: the only package that knows numpy, torch, cupy, jax and array-api-strict by name.

bk = get_backend("torch", device="cuda", dtype="float32")
bk.xp.matmul(a, b)              # everything the Array API standard has
bk.scatter_add_rows(out, i, s)  # ...and what it lacks (see base.Backend)

A backend is a name, a factory (device, dtype) -> Backend that raises BackendError when it cannot run here,
and the 16-bit dtypes it computes in. The five built-ins register below, as any other does: in code,

    llmscratch.register_backend("mine", MyBackend, half_dtypes=("bfloat16",))

or from an installed package, through an entry point in the group ``llmscratch.backends`` whose object is
the factory (its ``half_dtypes`` and ``summary`` attributes, if it has them, are read too):

    [project.entry-points."llmscratch.backends"]
    mine = "my_package:MyBackend"

Every list of backends (``backend_names()``, ``available_backends()``, the errors, the benchmarks'
--backend) comes from this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..util.errors import BackendError, did_you_mean
from .base import FLOAT_DTYPES, HALF_DTYPES, Backend, check_dtype

ENTRY_POINTS = "llmscratch.backends"
Factory = Callable[[Any, str], Backend]  # (device, dtype name) -> Backend


@dataclass(frozen=True)
class BackendSpec:
    name: str
    factory: Factory
    half_dtypes: tuple[str, ...] = ()  # the 16-bit dtypes it computes in (HALF_DTYPES)
    summary: str = ""


_REGISTRY: dict[str, BackendSpec] = {}
_plugins: list[bool] = []  # [True] once the entry points have been read


def register_backend(
    name: str, factory: Factory, half_dtypes: tuple[str, ...] = (), summary: str = "", replace: bool = False
) -> None:
    """Offer a backend under ``name``: ``factory(device, dtype)`` makes it (a Backend subclass works as one)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise BackendError(f"a backend name must be a plain identifier, got {name!r}")
    if name in _REGISTRY and not replace:
        raise BackendError(f"a backend named {name!r} is already registered; pass replace=True to replace it")
    unknown = [d for d in half_dtypes if d not in HALF_DTYPES]
    if unknown:
        raise BackendError(f"backend {name!r}: {unknown[0]!r} is not a 16-bit dtype ({', '.join(HALF_DTYPES)})")
    _REGISTRY[name] = BackendSpec(name, factory, tuple(half_dtypes), summary)


def _built_in(module: str, cls: str) -> Factory:
    """A factory that imports its module when first called (torch and cupy load only when used)."""
    return lambda device, dtype: getattr(importlib.import_module(module, __name__), cls)(device, dtype)


register_backend("numpy", _built_in(".numpy_backend", "NumpyBackend"), summary="NumPy on the CPU")
register_backend(
    "torch", _built_in(".torch_backend", "TorchBackend"), ("bfloat16", "float16"), "PyTorch on the CPU or a GPU"
)
register_backend("cupy", _built_in(".cupy_backend", "CupyBackend"), ("float16",), "CuPy on an NVIDIA GPU")
register_backend("jax", _built_in(".jax_backend", "JaxBackend"), ("bfloat16", "float16"), "JAX on the CPU or a GPU")
register_backend("strict", _built_in(".strict_backend", "StrictBackend"), summary="array-api-strict (the standard)")


def _unloadable(value: str, error: Exception) -> Factory:
    def factory(device: Any, dtype: str) -> Backend:
        raise BackendError(f"the backend plugin {value} could not be loaded ({type(error).__name__}: {error})")

    return factory


def _load_plugins() -> None:
    """Register the backends installed packages offer (once); one that fails to load says so when used."""
    if _plugins:
        return
    _plugins.append(True)
    for point in entry_points(group=ENTRY_POINTS):
        if point.name in _REGISTRY:
            continue  # a built-in or one registered in code keeps its name
        try:
            factory = point.load()
        except Exception as e:  # a broken third-party package must not break the others
            factory = _unloadable(point.value, e)
        register_backend(
            point.name, factory, getattr(factory, "half_dtypes", ()), getattr(factory, "summary", point.value)
        )


def backend_names() -> tuple[str, ...]:
    """Every registered backend, built-in first, whether or not it runs on this machine."""
    _load_plugins()
    return tuple(_REGISTRY)


def backend_spec(name: str) -> BackendSpec:
    """The backend registered as ``name``, else a one-line error that lists those that run here."""
    _load_plugins()
    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {name!r}{did_you_mean(str(name), _REGISTRY)}; "
            f"available here: {', '.join(available_backends())}"
        )
    return _REGISTRY[name]


def get_backend(name: str | Backend = "numpy", device: Any = None, dtype: str = "float32") -> Backend:
    """Make the backend ``name`` on ``device`` computing in ``dtype`` ("float32" | "float64" | "bfloat16" |
    "float16"; the 16-bit ones where the backend's half_dtypes list them).

    Raises BackendError with a one-line reason when the backend, device or dtype cannot be used here.
    A Backend passed as ``name`` is returned as it is.
    """
    if isinstance(name, Backend):
        return name
    spec = backend_spec(name)
    check_dtype(name, dtype, backends_with(dtype))
    return spec.factory(device, dtype)


def half_dtypes(name: str) -> tuple[str, ...]:
    """The 16-bit dtypes the backend ``name`` computes in (none for an unknown name)."""
    _load_plugins()
    return _REGISTRY[name].half_dtypes if name in _REGISTRY else ()


def backends_with(dtype: str) -> list[str]:
    """The backends that compute in a 16-bit ``dtype``."""
    return [name for name in backend_names() if dtype in _REGISTRY[name].half_dtypes]


def available_backends() -> list[str]:
    """The backend names that really work on this machine (cupy only with a usable GPU)."""
    names = []
    for name in backend_names():
        try:
            get_backend(name)
        except BackendError:
            continue
        names.append(name)
    return names


__all__ = [
    "ENTRY_POINTS",
    "FLOAT_DTYPES",
    "HALF_DTYPES",
    "Backend",
    "BackendSpec",
    "available_backends",
    "backend_names",
    "backend_spec",
    "backends_with",
    "get_backend",
    "half_dtypes",
    "register_backend",
]
