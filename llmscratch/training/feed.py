"""The training loop's batches: made on the host and, when the model runs on a GPU, one step ahead.

    feed = Feed(task, backend, micros)       micros: the micro-batch numbers this rank runs each step
    batch, tokens = feed.get(it, micro)

On a GPU the step is queued on the device and the host is free while it runs, so a background thread reads
the next micro-batch (from memory-mapped shards, which may mean waiting on the disk), gathers its windows and
starts its copy to the device (``Backend.upload``: pinned memory, no waiting) meanwhile: the device never
waits for the data. ``get`` hands over the batch made ahead when it is the one asked for, and makes it in
place otherwise (the first step, after a resume). On the CPU the step and the data share the cores, so the
batch is made when it is asked for; either way it is the same batch, so losses do not depend on the feed.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..tasks.base import Task


class Feed:
    def __init__(self, task: Task, bk: Backend, micros: range, ahead: bool | None = None) -> None:
        self.task, self.bk, self.micros = task, bk, micros
        self.ahead = (bk.is_gpu and not task.samples) if ahead is None else ahead  # rl samples with the model
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmscratch-feed") if self.ahead else None
        self._next: tuple[tuple[int, int], Future] | None = None
        self.waited = 0  # batches asked for that were not ready ahead (made in place)
        self.wait_seconds = 0.0  # how long the loop has waited in get(), all batches together

    def _make(self, it: int, micro: int) -> tuple[dict[str, Any], int]:
        batch, tokens = self.task.fetch(it, micro)
        if self.ahead:  # integer arrays (ids, targets) start their copy now; masks stay on the host
            batch = {
                k: self.bk.upload(v) if isinstance(v, np.ndarray) and v.dtype.kind in "iu" else v
                for k, v in batch.items()
            }
        return batch, tokens

    def _following(self, it: int, micro: int) -> tuple[int, int]:
        return (it, micro + 1) if micro + 1 < self.micros.stop else (it + 1, self.micros.start)

    def get(self, it: int, micro: int) -> tuple[dict[str, Any], int]:
        start = time.perf_counter()
        if self._pool is None:
            made = self._make(it, micro)
        else:
            if self._next is not None and self._next[0] == (it, micro):
                made = self._next[1].result()
            else:
                self.waited += 1
                made = self._make(it, micro)
            key = self._following(it, micro)
            self._next = (key, self._pool.submit(self._make, *key))
        self.wait_seconds += time.perf_counter() - start
        return made

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._next = None, None
