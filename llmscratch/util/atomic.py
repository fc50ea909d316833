"""Writes that never leave a half-written file or directory, and a disk that fails is an error, not a crash.

A file is written beside its target, flushed to disk, then renamed over it (``atomic_write``); a directory
is filled under a hidden temporary name and renamed into place (``write_directory``). ``os.replace`` and
``os.rename`` are atomic, so a reader, a crash or a power cut sees the old file or the new one, never a
mixture. A line appended to a log (``append_line``) is written whole or cut back off.

A disk that is full (ENOSPC), over quota (EDQUOT), read-only (EROFS) or failing (EIO) turns into one
``WriteError`` line: what could not be written, how much it needed against what was free, what to do. The
temporary file or directory is removed, so what was there before is untouched.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .dir_lock import LOCK_FILE, refuse_if_in_use
from .errors import CheckpointError, WriteError

DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk failed to write (an I/O error)",
}


def size_text(n: float) -> str:
    """Bytes as people read them: 812 B, 3.4 MB, 1.2 GB."""
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def free_space(path: Path) -> int | None:
    """Bytes free on the disk that holds path (or its nearest existing parent); None if that cannot be read."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


@contextmanager
def disk_errors(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turns a full, read-only or failing disk while writing path into one WriteError line."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        space = ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and needed is not None:
            free = free_space(path)
            space = f"; it needs {size_text(needed)}" + (
                f", {size_text(free)} is free there" if free is not None else ""
            )
        raise WriteError(
            f"could not write {path}: {DISK_ERRORS[e.errno]}{space}. Free some space or write elsewhere "
            "(what was there before is unchanged)"
        ) from None


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """Every byte of data to fd (open on path), flushed to the disk: the one place bytes are written, which
    the tests make fail as a full disk would."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """path holds data, whole: written beside it, flushed, then renamed over it."""
    path, data = Path(path), _as_bytes(data)
    with disk_errors(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            try:
                _write_all(fd, data, path)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def append_line(path: Path, line: str) -> None:
    """line appended to path whole: a write the disk refuses halfway is cut back off."""
    data = _as_bytes(line)
    with disk_errors(path, len(data)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data, path)
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def require_empty(path: str | os.PathLike) -> None:
    """A one-line error if path is a directory that holds anything (but the lock file a finished run leaves):
    what a user saved is never overwritten, and a directory a run is writing is named as such."""
    path = Path(path)
    refuse_if_in_use(path)
    if path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise CheckpointError(f"{path} already exists and is not empty; choose a new directory (nothing was written)")


def write_directory(path: str | os.PathLike, files: Mapping[str, bytes | str]) -> Path:
    """A directory of files written whole or not at all: into a hidden sibling (.tmp-<name>-<hex>), each
    file flushed to disk, then renamed to path (new or empty). A failure removes the sibling; one a power
    cut leaves behind is named .tmp-*, for its writer to clear."""
    path = Path(path)
    require_empty(path)
    contents = {name: _as_bytes(data) for name, data in files.items()}
    tmp = path.parent / f".tmp-{path.name}-{secrets.token_hex(3)}"
    with disk_errors(path, sum(map(len, contents.values()))):
        tmp.mkdir(parents=True)
        try:
            for name, data in contents.items():
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    _write_all(fd, data, tmp / name)
                finally:
                    os.close(fd)
            if path.exists():
                (path / LOCK_FILE).unlink(missing_ok=True)
                path.rmdir()
            try:
                os.rename(tmp, path)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise CheckpointError(
                    f"{path} was written by another process meanwhile; choose a new directory (nothing was written)"
                ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path
