"""PyTorch on the CPU or a CUDA GPU.

No tensor the library makes ever has ``requires_grad``, so no autograd graph is built: the backward passes
are our own. (The one exception is the ``sdpa`` attention kernel, which may ask torch for the gradient of
that single call; see ``llmscratch/kernels/sdpa.py``.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..util.errors import BackendError
from .base import Backend, PeakMemory
from .host_memory import peak_rss_delta, tune_host_allocator


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, device: Any, dtype_name: str) -> None:
        try:
            import torch
            from array_api_compat import torch as xp
        except ImportError as e:
            raise BackendError("torch is not installed; pip install 'llmscratch[torch]'") from e
        try:
            dev = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as e:
            raise BackendError(f"unknown torch device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendError(
                    f"torch cannot use device {device!r}: no CUDA GPU is available to this torch build "
                    f"(torch {torch.__version__}); use device='cpu'"
                )
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise BackendError(
                    f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA GPU(s)"
                )
        elif dev.type != "cpu":
            raise BackendError(f"the torch backend supports 'cpu' and 'cuda' devices, not {device!r}")
        self.torch = torch
        super().__init__(xp, dev, dtype_name, is_gpu=dev.type == "cuda")
        if not self.is_gpu:
            tune_host_allocator()

    def _from_numpy(self, a: np.ndarray, dtype: Any) -> Any:
        return self.torch.tensor(a, dtype=dtype, device=self.device)

    def upload(self, a: np.ndarray) -> Any:
        """Pinned host memory and an asynchronous copy on CUDA: the copy queues on the stream ahead of the
        step that reads it, and torch's pinned-memory cache keeps the host buffer until the copy is done."""
        if not self.is_gpu:
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
        if self.is_gpu:
            self.torch.cuda.synchronize(self.device)

    def free_memory(self) -> int | None:
        return self.torch.cuda.mem_get_info(self.device)[0] if self.is_gpu else super().free_memory()

    @contextlib.contextmanager
    def peak_memory(self) -> Iterator[PeakMemory]:
        """CUDA: torch's allocator peak. CPU: the process's peak resident memory (torch's CPU allocator is
        invisible to tracemalloc), which also counts any other allocation made inside the block."""
        if not self.is_gpu:
            with peak_rss_delta() as result:
                yield result
            return
        cuda = self.torch.cuda
        cuda.synchronize(self.device)
        cuda.reset_peak_memory_stats(self.device)
        start = cuda.memory_allocated(self.device)
        result = PeakMemory()
        try:
            yield result
        finally:
            cuda.synchronize(self.device)
            result.bytes = cuda.max_memory_allocated(self.device) - start
