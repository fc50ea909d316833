"""Input checks shared by the ops: one-line errors that name the op, the argument and the fix."""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from ..util.errors import DataError, ShapeError


def expect(ok: bool, op: str, message: str) -> None:
    """Raise ShapeError('<op>: <message>') unless ``ok``."""
    if not ok:
        raise ShapeError(f"{op}: {message}")


def expect_integers(bk: Backend, ids: Any, op: str) -> None:
    """Raise ShapeError('<op>: ids must be integers, ...') unless ``ids`` has an integer dtype."""
    expect(bk.xp.isdtype(ids.dtype, "integral"), op, f"ids must be integers, got dtype {ids.dtype}")


def check_ids(bk: Backend, ids: Any, size: int, op: str, ignore_index: int | None = None) -> None:
    """Every id must lie in [0, size) (or equal ``ignore_index``); a bad one raises DataError naming it.

    Costs one small reduction and, on a GPU, one wait: worth it, since an out-of-range index there
    kills the CUDA context instead of raising. Inside a compiled step (``Backend.is_traced``) the values are
    not known yet and nothing is checked: the step's batches come from a task's data, checked when it was read.
    """
    xp = bk.xp
    expect_integers(bk, ids, op)
    if ids.size == 0 or bk.is_traced(ids):  # empty: no min or max; traced: the values come when the program runs
        return
    kept = ids if ignore_index is None else xp.where(ids == ignore_index, 0, ids)
    lo, hi = int(xp.min(kept)), int(xp.max(kept))
    if lo < 0 or hi >= size:
        raise id_out_of_range(op, lo if lo < 0 else hi, size)


def id_out_of_range(op: str, bad: int, size: int) -> DataError:
    """The error for a token id outside a vocabulary of ``size``."""
    return DataError(f"{op}: id {bad} is out of range for a vocabulary of {size} (valid: 0..{size - 1})")
