"""Stop signals counted one by one, the moment each arrives.

Python runs a signal's handler later, in the main thread, between two of its bytecodes, and keeps one
"tripped" flag per signal number until then. While the main thread is inside one long C call (a
denoising step on the GPU, a block of the VAE decoder, a large copy) no handler runs, and two SIGINTs
that arrive meanwhile trip the same flag: the handler runs once, and the second Ctrl-C is lost. The
C-level handler also writes each signal's number to the wakeup fd (`signal.set_wakeup_fd`), one byte a
signal, at once: a thread of this module reads them there, so every signal is counted, in time, and it
may log (a handler may not: the code it interrupted may hold the logger's lock)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Collection

import structlog

log = structlog.get_logger("i2v_watcher.service.lifecycle")


class SignalReader:
    """Calls `on_signal(signum)` on a thread of its own for every one of `signums` delivered, between
    start() and stop() (both in the main thread). Each signal still needs a Python handler installed
    (signal.signal): the wakeup fd is written by the handler's C side."""

    def __init__(self, signums: Collection[int], on_signal: Callable[[int], None]) -> None:
        self.signums = frozenset(int(s) for s in signums)
        self.on_signal = on_signal
        self._fds: tuple[int, int] | None = None
        self._previous = -1
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """False where the wakeup fd cannot be set (not the main thread): the handler counts then."""
        read, write = os.pipe()
        os.set_blocking(write, False)  # the signal handler never blocks on a full pipe
        try:
            self._previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:
            os.close(read)
            os.close(write)
            return False
        self._fds = (read, write)
        self._thread = threading.Thread(target=self._run, args=(read,), name="stop-signals", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._fds is None:
            return
        read, write = self._fds
        self._fds = None
        signal.set_wakeup_fd(self._previous)
        os.close(write)  # the thread reads the end of the pipe and returns
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(read)

    def _run(self, read: int) -> None:
        while True:
            try:
                data = os.read(read, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self.signums:
                    try:
                        self.on_signal(signum)
                    except Exception:  # never end the thread that counts the next one
                        log.exception("handling a stop signal failed", signal=signum)
