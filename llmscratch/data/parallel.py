"""Work handed to worker processes in order, a few items ahead: what ``prepare`` and tokenizer training share.

    for result in in_order(encode_unit, units, workers=2, start=(_start_worker, setup)):
        write(result)

``in_order`` yields fn(item) for each item, in the items' order. With more than one worker the items go to
a pool of fresh (spawned) processes, each set up once by ``start``, and at most two per worker are in flight:
the items are read as they are needed, so memory stays flat whatever their number. With one worker it all
runs here, with no process started.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def in_order(
    fn: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int,
    start: tuple[Callable[..., None], tuple[Any, ...]],
) -> Iterator[Result]:
    setup, args = start
    if workers <= 1:
        setup(*args)
        yield from map(fn, items)
        return
    with multiprocessing.get_context("spawn").Pool(workers, setup, args) as pool:
        waiting: deque[Any] = deque()
        for item in items:
            waiting.append(pool.apply_async(fn, (item,)))
            if len(waiting) >= 2 * workers:
                yield waiting.popleft().get()
        while waiting:
            yield waiting.popleft().get()
