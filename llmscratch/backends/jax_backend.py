"""JAX on the CPU or a GPU, through ``jax.numpy`` (which is an Array API namespace itself).

JAX's arrays are immutable: ``x[i] = v`` raises and ``x += v`` makes a new array. So the library never relies
on writing into an array another name still holds: what would write in place goes through ``Backend.assign``
or ``scatter_add_rows`` (``.at[...]`` here), and the optimizer stores the arrays its update returns.

Random numbers: a ``KeyChain`` holds a JAX PRNG key and splits it for each draw, so one ``generator`` serves
every dropout of a step, as NumPy's and torch's stateful generators do, and works inside ``jax.jit`` (the key
is then a traced argument; see ``compile``).

JAX computes in float32 unless told otherwise; the backend turns on 64-bit types (``jax_enable_x64``) for the
whole process, since token ids are int64 and the verification ladder runs in float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..util.errors import BackendError
from .base import Backend, PeakMemory
from .host_memory import peak_rss_delta

_registered: list[bool] = []  # [True] once KeyChain is a JAX pytree node


class KeyChain:
    """A JAX PRNG key that moves on at every draw: ``next()`` -> a fresh key (the chain keeps the other half).
    A JAX pytree (its key is the leaf), so a chain passed into a compiled step is traced like any array."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def next(self) -> Any:
        import jax

        self.key, draw = jax.random.split(self.key)
        return draw

    def tree_flatten(self) -> tuple[tuple[Any], None]:
        return (self.key,), None

    @classmethod
    def tree_unflatten(cls, aux: None, leaves: tuple[Any]) -> KeyChain:
        return cls(*leaves)


def jax_device(jax: Any, device: Any) -> Any:
    """``device`` ("cpu", "gpu", "cuda", "cuda:1", "gpu:0"; None: the CPU) as a JAX device, or a one-line
    BackendError saying what is missing."""
    kind, _, index = str("cpu" if device is None else device).partition(":")
    platform = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}.get(kind)
    if platform is None or (index and not index.isdigit()):
        raise BackendError(f"unknown jax device {device!r}; use cpu, gpu or gpu:N")
    try:
        devices = jax.devices(platform)
    except RuntimeError as e:
        raise BackendError(
            f"jax cannot use device {device!r}: it needs an NVIDIA GPU and jax's CUDA build "
            "(pip install 'jax[cuda12]'), and this machine has none; use device='cpu'"
        ) from e
    n = int(index or 0)
    if n >= len(devices):
        raise BackendError(f"device {device!r} does not exist; this machine has {len(devices)} {platform} device(s)")
    return devices[n]


class JaxBackend(Backend):
    name = "jax"
    compiles = True

    def __init__(self, device: Any, dtype_name: str) -> None:
        try:
            import jax
            import jax.numpy as xp
        except ImportError as e:
            raise BackendError("jax is not installed; pip install 'llmscratch[jax]'") from e
        jax.config.update("jax_enable_x64", True)
        if not _registered:
            jax.tree_util.register_pytree_node_class(KeyChain)
            _registered.append(True)
        self.jax = jax
        dev = jax_device(jax, device)
        super().__init__(xp, dev, dtype_name, is_gpu=dev.platform != "cpu")
        self._barrier = self.zeros(())  # see synchronize

    def _from_numpy(self, a: np.ndarray, dtype: Any) -> Any:
        return self.jax.device_put(self.xp.array(a, dtype=dtype, copy=True), self.device)  # never a view of a

    def to_numpy(self, x: Any) -> np.ndarray:
        a = np.array(x, copy=True)
        return a.astype(np.float32) if x.dtype == self.xp.bfloat16 else a

    def assign(self, x: Any, index: Any, value: Any) -> Any:
        return x.at[index].set(value)

    def scatter_add_rows(self, out: Any, idx: Any, src: Any) -> Any:
        return out.at[idx].add(src)

    def erf(self, x: Any) -> Any:
        return self.jax.scipy.special.erf(x)

    def generator(self, *seed: int) -> KeyChain:
        state = np.random.SeedSequence(list(seed)).generate_state(2, np.uint32)
        return KeyChain(self.jax.random.wrap_key_data(self.xp.asarray(state, dtype=np.uint32)))

    def uniform(self, gen: KeyChain, shape: Any) -> Any:
        return self.jax.random.uniform(gen.next(), tuple(shape), dtype=self.dtype)

    def synchronize(self) -> None:
        """Wait for the work queued on the device (JAX dispatches asynchronously): a device runs what it was
        given in order, so one tiny computation queued last and waited for is done after all the rest (also
        work whose result was dropped, which no array left to wait on would cover)."""
        (self._barrier + 1).block_until_ready()

    @property
    def device_label(self) -> str:
        return "cpu" if self.device.platform == "cpu" else f"cuda:{self.device.id}"

    def free_memory(self) -> int | None:
        stats = self.device.memory_stats() if self.is_gpu else None
        if stats and "bytes_limit" in stats:
            return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        return super().free_memory() if not self.is_gpu else None

    @contextlib.contextmanager
    def peak_memory(self) -> Iterator[PeakMemory]:
        """CPU: the process's peak resident memory (XLA's buffers are invisible to tracemalloc). A GPU keeps a
        peak that cannot be reset, so none is measured there."""
        if self.is_gpu:
            yield PeakMemory()
            return
        with peak_rss_delta() as result:
            yield result

    def is_traced(self, x: Any) -> bool:
        return isinstance(x, self.jax.core.Tracer)

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` compiled by XLA (``jax.jit``): traced once per set of argument shapes, then one program."""
        return self.jax.jit(fn)
