"""Data-parallel collectives on ``torch.distributed``, for every backend's arrays.

A ``World`` is this process's place in a run that ``torchrun`` launched: rank, world size and the process
group, read from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without
them it is a world of one, and every collective is the identity. The process group is gloo for host arrays
(numpy, torch on the CPU) and NCCL for GPU arrays (torch on CUDA; CuPy through DLPack): a collective works on
the arrays' own memory, shared with a torch tensor, never on a copy (numpy: ``torch.from_numpy``; CuPy:
``torch.from_dlpack``).

Collectives have a timeout ($LLMSCRATCH_DIST_TIMEOUT seconds, default 60): a rank that died makes the others
fail with an error within it instead of waiting forever (torchrun then ends the run).
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from ..util.errors import BackendError, ConfigError
from .base import Backend

DIST_BACKENDS = ("auto", "gloo", "nccl")
BUCKET_BYTES = 25 * 2**20  # torch DDP's default bucket size
DEFAULT_TIMEOUT_S = 60.0


def check_dist_backend(array_backend: str, device: str | None, dist_backend: str) -> None:
    """Refuse a collective backend that cannot reduce this array backend's memory (before any process starts)."""
    if dist_backend not in DIST_BACKENDS:
        raise ConfigError(f"unknown dist_backend {dist_backend!r}; choose one of {', '.join(DIST_BACKENDS)}")
    on_gpu = array_backend == "cupy" or (device or "cpu").startswith("cuda")
    if dist_backend == "gloo" and on_gpu:
        raise ConfigError(
            f"{array_backend} on the GPU with dist_backend='gloo': gloo reduces host memory; use 'nccl' (or 'auto')"
        )
    if dist_backend == "nccl" and not on_gpu:
        raise ConfigError(f"dist_backend='nccl' needs GPU arrays; {array_backend} on the CPU uses 'gloo' (or 'auto')")


def launched_world_size() -> int:
    """WORLD_SIZE as the launcher set it (1 without a launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


class Bucket:
    """A flat copy of some arrays whose sum over the ranks is under way (``World.start_sum``)."""

    def __init__(self, flat: Any, shapes: list[tuple[int, ...]], work: Any) -> None:
        self.flat, self.shapes, self.work = flat, shapes, work


class World:
    """rank / size / is_main, and the collectives the trainer needs. ``World.from_env(bk)`` joins the run."""

    def __init__(self, bk: Backend, rank: int = 0, size: int = 1) -> None:
        self.bk, self.rank, self.size = bk, rank, size
        self.comm_seconds = 0.0  # time spent waiting for all-reduces, for the logs

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, bk: Backend, dist_backend: str = "auto") -> World:
        size = launched_world_size()
        if size == 1:
            return cls(bk)
        if bk.name not in ("numpy", "torch", "cupy"):
            raise BackendError(f"data-parallel training runs on numpy, torch or cupy arrays, not {bk.name}")
        if bk.name == "torch" and bk.device.type not in ("cpu", "cuda"):
            raise BackendError(
                f"data-parallel training reduces gradients with gloo (CPU) or nccl (CUDA), not on torch's "
                f"{bk.device.type} devices; train on one {bk.device.type} device, or on cpu or cuda"
            )
        import torch
        import torch.distributed as dist

        check_dist_backend(bk.name, None if not bk.is_gpu else "cuda", dist_backend)
        group = ("nccl" if bk.is_gpu else "gloo") if dist_backend == "auto" else dist_backend
        timeout = float(os.environ.get("LLMSCRATCH_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        if not dist.is_initialized():
            if group == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(group, timeout=datetime.timedelta(seconds=timeout))
            # a process group still alive at interpreter exit can abort the process (gloo's threads)
            atexit.register(_destroy_process_group)
        return cls(bk, dist.get_rank(), dist.get_world_size())

    # ---- the collectives ---------------------------------------------------------------------------------

    def _as_torch(self, a: Any) -> Any:
        """A torch tensor sharing ``a``'s memory (a must be contiguous)."""
        import torch

        if self.bk.name == "numpy":
            return torch.from_numpy(a)
        if self.bk.name == "cupy":
            return torch.from_dlpack(a)
        return a

    def _all_reduce(self, t: Any, op: str = "SUM") -> None:
        import torch.distributed as dist

        t0 = time.perf_counter()
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        self.comm_seconds += time.perf_counter() - t0

    def start_sum(self, arrays: Sequence[Any]) -> list[Bucket]:
        """Start summing every rank's ``arrays`` (copied into flat buckets of ≤ BUCKET_BYTES) and return at
        once; ``finish`` waits. (The trainer calls both once the backward is done: started block by block during
        the backward, the reductions competed for the same two cores and made steps slower; benchmarks/README.md.)"""
        xp, buckets = self.bk.xp, []
        groups: list[list[Any]] = [[]]
        size = 0
        for a in arrays:
            nbytes = math.prod(a.shape) * a.dtype.itemsize
            if groups[-1] and size + nbytes > BUCKET_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(a)
            size += nbytes
        import torch.distributed as dist

        for group in groups:
            if group:
                flat = xp.concat([xp.reshape(a, (-1,)) for a in group])
                work = dist.all_reduce(self._as_torch(flat), op=dist.ReduceOp.SUM, async_op=True)
                buckets.append(Bucket(flat, [tuple(a.shape) for a in group], work))
        return buckets

    def finish(self, buckets: Sequence[Bucket]) -> list[Any]:
        """Wait for the buckets; -> the summed arrays (views into the buckets), in the order they were started.
        The time spent waiting here is what the step lost to communication (``comm_seconds``)."""
        xp, out = self.bk.xp, []
        t0 = time.perf_counter()
        for bucket in buckets:
            bucket.work.wait()
            offset = 0
            for shape in bucket.shapes:
                n = math.prod(shape)
                out.append(xp.reshape(bucket.flat[offset : offset + n], shape))
                offset += n
        self.comm_seconds += time.perf_counter() - t0
        return out

    def _reduce_numbers(self, values: Sequence[float], op: str, dtype: str) -> list[float]:
        import torch

        t = torch.tensor(list(values), dtype=getattr(torch, dtype), device="cuda" if self.bk.is_gpu else "cpu")
        self._all_reduce(t, op)
        return t.cpu().tolist()

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        """Python numbers summed over the ranks (float64)."""
        return list(values) if self.size == 1 else self._reduce_numbers(values, "SUM", "float64")

    def shard(self, n: int) -> range:
        """The indices 0..n-1 this rank takes (every size-th one, from its rank)."""
        return range(self.rank, n, self.size)

    def check_same(self, what: str, data: bytes) -> None:
        """Stop every rank with the same one-line error unless every rank holds the same ``data`` (hashed)."""
        if self.size == 1:
            return
        digest = int.from_bytes(hashlib.sha256(data).digest()[:6], "little")  # exact in int64
        low, high = self._reduce_numbers([digest], "MIN", "int64")[0], self._reduce_numbers([digest], "MAX", "int64")[0]
        if low != high:
            raise ConfigError(
                f"the ranks of this run hold different {what}; launch every rank with the same command and data"
            )

    def close(self) -> None:
        if self.size > 1:
            _destroy_process_group()


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
