"""PyTorch on the CPU or any of torch's accelerators: CUDA GPUs, Apple silicon (mps), Intel GPUs (xpu).

No tensor the library makes ever has ``requires_grad``, so no autograd graph is built: the backward passes
are our own. (The one exception is the ``sdpa`` attention kernel, which may ask torch for the gradient of
that single call; see ``llmscratch/kernels/sdpa.py``.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..util.errors import BackendError
from .base import FLOAT_DTYPES, Backend, PeakMemory
from .host_memory import peak_rss_delta, tune_host_allocator


@dataclass(frozen=True)
class DeviceKind:
    """A kind of torch device: what a machine needs to have one (for the error where it has not), and the
    dtypes torch computes in on it."""

    needs: str
    dtypes: tuple[str, ...] = FLOAT_DTYPES


DEVICE_KINDS = {
    "cpu": DeviceKind("nothing"),
    "cuda": DeviceKind("an NVIDIA GPU and a CUDA build of torch (pytorch.org lists the pip command for each CUDA)"),
    "mps": DeviceKind("a Mac with Apple silicon, macOS 12.3 or later", ("float32", "bfloat16", "float16")),
    "xpu": DeviceKind(
        "an Intel GPU and an XPU build of torch (pip install torch --index-url https://download.pytorch.org/whl/xpu)"
    ),
}


def torch_device(torch: Any, device: Any, dtype: str) -> Any:
    """``device`` ("cpu", "cuda", "cuda:1", "mps", "xpu:0", a torch.device; None: the CPU) as a torch.device
    that is there and computes in ``dtype``; a one-line BackendError saying what is missing otherwise."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise BackendError(f"unknown torch device {device!r}; use {', '.join(DEVICE_KINDS)} (or cuda:N, ...)") from e
    kind = DEVICE_KINDS.get(dev.type)
    if kind is None:
        raise BackendError(f"llmscratch does not run on torch {dev.type!r} devices; use {', '.join(DEVICE_KINDS)}")
    if dev.type != "cpu":
        module = getattr(torch, dev.type, None)
        if module is None or not module.is_available():
            raise BackendError(
                f"torch cannot use device {device!r}: it needs {kind.needs}, and this machine or torch "
                f"{torch.__version__} has none; use device='cpu'"
            )
        count = module.device_count() if hasattr(module, "device_count") else 1
        if dev.index is not None and dev.index >= count:
            raise BackendError(f"device {device!r} does not exist; this machine has {count} {dev.type} device(s)")
    if dtype not in kind.dtypes:
        raise BackendError(f"torch has no {dtype} on {dev.type} devices; use dtype {' or '.join(kind.dtypes)}")
    return dev


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, device: Any, dtype_name: str) -> None:
        try:
            import torch
            from array_api_compat import torch as xp
        except ImportError as e:
            raise BackendError("torch is not installed; pip install 'llmscratch[torch]'") from e
        dev = torch_device(torch, device, dtype_name)
        self.torch = torch
        self.accelerator = getattr(torch, dev.type) if dev.type != "cpu" else None  # torch.cuda, torch.mps, ...
        super().__init__(xp, dev, dtype_name, is_gpu=dev.type != "cpu")
        if not self.is_gpu:
            tune_host_allocator()

    def _from_numpy(self, a: np.ndarray, dtype: Any) -> Any:
        return self.torch.tensor(a, dtype=dtype, device=self.device)

    def upload(self, a: np.ndarray) -> Any:
        """Pinned host memory and an asynchronous copy on CUDA: the copy queues on the stream ahead of the
        step that reads it, and torch's pinned-memory cache keeps the host buffer until the copy is done."""
        if self.device.type != "cuda":
            return self.from_numpy(a)
        host = self.torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).pin_memory()
        return host.to(self.device, non_blocking=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        x = x.detach()
        if x.dtype == self.torch.bfloat16:
            x = x.float()
        return x.cpu().numpy().copy()

    def contiguous(self, x: Any) -> Any:
        return x.contiguous()

    def pointer(self, x: Any) -> int:
        return x.data_ptr()

    def strides(self, x: Any) -> tuple[int, ...]:
        return tuple(x.stride())

    def scatter_add_rows(self, out: Any, idx: Any, src: Any) -> Any:
        return out.index_add_(0, idx, src)

    def erf(self, x: Any) -> Any:
        return self.torch.special.erf(x)

    def generator(self, *seed: int) -> Any:
        state = np.random.SeedSequence(list(seed)).generate_state(1, np.uint64)[0]
        return self.torch.Generator(device=self.device).manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def uniform(self, gen: Any, shape: Any) -> Any:
        return self.torch.rand(tuple(shape), generator=gen, dtype=self.dtype, device=self.device)

    def threads(self) -> int:
        return self.torch.get_num_threads()

    def synchronize(self) -> None:
        if self.device.type == "mps":
            self.accelerator.synchronize()  # one device: no argument
        elif self.accelerator is not None:
            self.accelerator.synchronize(self.device)

    def free_memory(self) -> int | None:
        """The device's free memory where torch tells it (CUDA, XPU: mem_get_info; MPS: the memory Metal
        recommends less what the driver holds); the host's on the CPU."""
        if self.accelerator is None:
            return super().free_memory()
        if hasattr(self.accelerator, "mem_get_info"):
            return self.accelerator.mem_get_info(self.device)[0]
        if hasattr(self.accelerator, "recommended_max_memory"):
            return self.accelerator.recommended_max_memory() - self.accelerator.driver_allocated_memory()
        return None

    @contextlib.contextmanager
    def peak_memory(self) -> Iterator[PeakMemory]:
        """An accelerator: torch's allocator peak (CUDA, XPU; mps keeps none). CPU: the process's peak resident
        memory (torch's CPU allocator is invisible to tracemalloc), which also counts any other allocation made
        inside the block."""
        if not self.is_gpu:
            with peak_rss_delta() as result:
                yield result
            return
        device, result = self.accelerator, PeakMemory()
        if not hasattr(device, "max_memory_allocated"):  # mps keeps no peak: not measured
            yield result
            return
        self.synchronize()
        device.reset_peak_memory_stats(self.device)
        start = device.memory_allocated(self.device)
        try:
            yield result
        finally:
            self.synchronize()
            result.bytes = device.max_memory_allocated(self.device) - start
