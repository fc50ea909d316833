"""Fixtures shared by the tests: every backend that can run here, in float64 and float32.

Backend ids: every registered backend (llmscratch.backends.backend_names(): numpy, torch, cupy, jax, strict and
any plugin), plus torch-cuda; a backend registered is a backend tested. Where no usable GPU
exists (cupy.cuda.is_available(), not just the import) the cases parametrised over a GPU backend id are
deselected, so the summary counts them in one number instead of listing a skip for each; a test that makes a
GPU backend itself still skips with the reason.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from llmscratch.backends import backend_names, get_backend
from llmscratch.data import load_text
from llmscratch.data.corpora import stdlib_text
from llmscratch.util.errors import BackendError, DataError

BACKEND_IDS = (*backend_names(), "torch-cuda")
GPU_IDS = ("cupy", "torch-cuda")


def _gpu_backend_runs(backend_id: str) -> bool:
    try:
        get_backend(*backend_id.split("-")[:1], device="cuda" if backend_id == "torch-cuda" else None)
    except BackendError:
        return False
    return True


def pytest_collection_modifyitems(config, items) -> None:
    """Deselect the cases of a GPU backend id this machine cannot run (see the module docstring)."""
    absent = {b for b in GPU_IDS if not _gpu_backend_runs(b)}
    gone = [i for i in items if getattr(i, "callspec", None) and i.callspec.params.get("backend_id") in absent]
    if gone:
        config.hook.pytest_deselected(items=gone)
        dropped = {id(i) for i in gone}
        items[:] = [i for i in items if id(i) not in dropped]


TINY_MODEL = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4)


def tiny(**values) -> dict:
    """A tiny training config: TINY_MODEL's sizes with what a test sets on top."""
    return TINY_MODEL | values


def flags(**values) -> list[str]:
    """Config values as ``llmscratch train`` flags, ``--kebab-case VALUE``; True gives the bare flag (--quiet)."""
    out = []
    for key, value in values.items():
        out += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return out


def make_backend(backend_id: str, dtype: str = "float64"):
    """Backend for an id like 'torch-cuda', or pytest.skip with the reason it cannot run here."""
    name, _, device = backend_id.partition("-")
    try:
        return get_backend(name, device=device or None, dtype=dtype)
    except BackendError as e:
        pytest.skip(f"{backend_id}: {e}")


@pytest.fixture(params=BACKEND_IDS)
def backend_id(request) -> str:
    return request.param


@pytest.fixture
def bk64(backend_id):
    return make_backend(backend_id, "float64")


@pytest.fixture
def bk32(backend_id):
    return make_backend(backend_id, "float32")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@functools.cache
def _lookup(name: str) -> tuple[str | None, str]:
    """(text, "") or (None, why not): asked once per session, so an offline machine waits for one failed
    download per corpus, not one per test."""
    try:
        return load_text(name)[1], ""
    except DataError as e:
        return None, str(e)


def corpus(name: str) -> str:
    """A built-in corpus through the library's own lookup ($LLMSCRATCH_DATA_DIR, the cache, then one download);
    the test skips, with the reason, only when none of those works (offline, nothing cached)."""
    text, why = _lookup(name)
    if text is None:
        pytest.skip(f"the {name} corpus cannot be had here: {why}")
    return text


def shakespeare_or_stdlib(chars: int) -> str:
    """tinyshakespeare through the library's lookup, else (offline, nothing cached) ``chars`` of the
    standard library's source: for the tests that need a real corpus, not this one."""
    return _lookup("shakespeare")[0] or stdlib_text(chars)


@pytest.fixture(scope="session")
def shakespeare() -> str:
    """tinyshakespeare (the test skips when it cannot be had)."""
    return corpus("shakespeare")


@pytest.fixture(scope="session")
def names() -> str:
    """makemore's names (the test skips when they cannot be had)."""
    return corpus("names")


def rel_err(a: np.ndarray, b: np.ndarray, floor: float = 1e-30) -> float:
    """max|a - b| / max(max|b|, floor): one relative error for a whole tensor (b is the reference).

    ``floor`` keeps an exactly-zero reference (e.g. dq of a single key) from turning rounding into infinity.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference shape {b.shape}"
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, floor)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0
