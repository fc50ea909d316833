"""Writes that never leave a half-written file or directory: write beside the target, flush to disk, then
rename.

``os.replace`` is atomic on POSIX and Windows, so a reader (or a crash) sees the old file or the new one,
never a mixture; a directory is renamed into a place that is absent or empty.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def require_empty(path: str | os.PathLike) -> None:
    """A one-line error if path is a directory that holds anything: what a user saved is never overwritten."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise CheckpointError(f"{path} already exists and is not empty; choose a new directory (nothing was written)")


def write_directory(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """A directory written whole or not at all: ``fill(tmp)`` writes its files into a hidden sibling
    (.tmp-<name>-<hex>), which is flushed to disk and renamed to path (new or empty). A failure removes the
    sibling; one a power cut leaves behind is named .tmp-*, for its writer to clear."""
    path = Path(path)
    require_empty(path)
    tmp = path.parent / f".tmp-{path.name}-{secrets.token_hex(3)}"
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            path.rmdir()
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
