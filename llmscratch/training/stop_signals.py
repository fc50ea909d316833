"""Stopping a run on Ctrl-C or SIGTERM (what a scheduler sends before it preempts a job), promptly.

The first signal asks for a stop at the end of the current step: the trainer then saves a checkpoint of it
and returns. The terminal is told at once. A second signal, or a step still running ``timeout`` seconds
after the first (a step can run for minutes inside one array operation, where Python runs no handler),
ends the process at once with status 128 + the signal's number, as a shell reports a killed command: the
previous checkpoint is whole, since checkpoints are only ever renamed into place.

A watcher thread keeps that promise even while the main thread is stuck in native code: Python's C-level
signal handler writes the signal's number to a socket (``signal.set_wakeup_fd``) at the moment the signal
arrives, and the thread waits on that socket. Outside the main thread nothing is installed (a signal
handler can only be set there), and the caller's own handlers come back when the run ends.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
QUIT = b"\0"  # not a signal number: tells the watcher the run has ended


class StopSignals:
    """``with StopSignals(timeout) as stop:`` ... ``stop.requested`` after the first signal; the loop calls
    ``stop.stopping()`` once it has seen it, so that the checkpoint it then writes is not cut short."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.requested = False
        self._step_ended = threading.Event()
        self._previous: dict[int, Any] = {}
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._previous_fd = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        read, write = socket.socketpair()
        write.setblocking(False)
        self._wakeup = (read, write)
        self._previous_fd = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="llmscratch-stop-signals", daemon=True)
        self._watcher.start()
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True  # the watcher has told the terminal, and handles a second signal

    def stopping(self) -> None:
        """The step has ended and the loop is stopping: the timeout no longer applies."""
        self._step_ended.set()

    def _watch(self) -> None:
        assert self._wakeup is not None
        read = self._wakeup[0]
        first: float | None = None  # when the first stop signal came
        first_signal = signal.SIGTERM
        while True:
            deadline = None if first is None or self._step_ended.is_set() else first + self.timeout
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([read], [], [], wait)[0]:
                if self._step_ended.is_set():
                    continue
                _exit_now(f"the step did not end within {self.timeout:g} s of the stop signal", first_signal)
            data = read.recv(64)
            if QUIT in data:
                return
            for signum in (b for b in data if b in STOP_SIGNALS):
                if first is None:
                    first, first_signal = time.monotonic(), signum
                    _say(
                        f"{signal.Signals(signum).name}: stopping after this step, with a checkpoint of it "
                        f"(again, or {self.timeout:g} s, to stop at once)"
                    )
                else:
                    _exit_now(f"a second {signal.Signals(signum).name}", signum)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._wakeup is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._wakeup[1].send(QUIT)
        if self._watcher is not None:
            self._watcher.join()
        for end in self._wakeup:
            end.close()
        self._wakeup = None


def _say(message: str) -> None:
    print(f"llmscratch: {message}", file=sys.stderr, flush=True)


def _exit_now(why: str, signum: int) -> None:
    _say(f"{why}: exiting now; the last checkpoint is whole (continue with --resume)")
    os._exit(128 + signum)
