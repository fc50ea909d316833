"""One writer per output directory: an OS file lock on ``<dir>/.llmscratch.lock``.

A run holds the lock for as long as it may write into the directory. The lock belongs to the open file, so
the kernel drops it when the process ends, however it ends: a crashed or killed run never leaves a stale
lock behind (the file itself stays, holding the last owner's name, and means nothing unless it is locked).
A second writer is refused in one line that names the process holding the lock; readers take no lock (a
checkpoint is complete before LATEST names it).

POSIX uses ``fcntl.flock``, Windows ``msvcrt.locking`` on the file's first byte.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from .errors import DirectoryInUseError

LOCK_FILE = ".llmscratch.lock"


def _try_lock(fd: int) -> bool:
    """Takes the lock on fd without waiting; False if another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _owner(lock: Path) -> str:
    try:
        return lock.read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


class DirectoryLock:
    """``with DirectoryLock(out_dir):`` the calling process is the directory's only writer (see the module
    docstring); ``what`` names the holder in the message another writer gets."""

    def __init__(self, path: str | os.PathLike, what: str = "llmscratch") -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None
        self._made: Path | None = None  # the outermost folder acquire() created, if any

    def acquire(self) -> DirectoryLock:
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self._made = missing[-1] if missing else None
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            self._made = None
            raise DirectoryInUseError(_in_use_message(self.path, _owner(lock)))
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.what} (pid {os.getpid()} on {socket.gethostname()})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drops the lock; a directory that acquire() created and nothing else was written to is removed."""
        if self._fd is None:
            return
        if self._made is not None and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
            (self.path / LOCK_FILE).unlink()
            for folder in (self.path, *self.path.parents):
                folder.rmdir()
                if folder == self._made:
                    break
        os.close(self._fd)  # closing the file drops the lock
        self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def _in_use_message(path: Path, owner: str) -> str:
    return (
        f"{path} is in use by {owner}; wait for it to finish or stop it, or write to another directory "
        "(reading it, to sample or evaluate, works meanwhile)"
    )


def refuse_if_in_use(path: str | os.PathLike) -> None:
    """A one-line DirectoryInUseError if a live process holds path's lock (nothing is left locked)."""
    lock = Path(path) / LOCK_FILE
    if not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        if not _try_lock(fd):
            raise DirectoryInUseError(_in_use_message(Path(path), _owner(lock)))
    finally:
        os.close(fd)
