"""How a stop request reaches a running job: checked at every progress point of every stage.

A signal handler only records the request here. Logging from inside a handler could deadlock on the
logger's lock, which the interrupted code may hold; the request is announced at the next check."""

from __future__ import annotations

import time
from collections.abc import Callable

from i2v_watcher.errors import JobCancelled

Announce = Callable[[str, bool], None]  # (signal name, first) → log it


class Cancel:
    """First signal: let the job finish within `stop_timeout_s`, then abort. Second: abort at once."""

    def __init__(self, announce: Announce | None = None) -> None:
        self.stopping = False
        self.deadline: float | None = None
        self.force = False
        self.announce = announce
        self._unannounced: list[tuple[str, bool]] = []

    def request_stop(self, timeout_s: float, reason: str = "stop") -> None:
        """Safe in a signal handler: assignments and a list append, no lock."""
        self._unannounced.append((reason, not self.stopping))
        if self.stopping:
            self.force = True
            return
        self.stopping = True
        self.deadline = time.monotonic() + timeout_s

    def announce_pending(self) -> None:
        while self._unannounced:
            reason, first = self._unannounced.pop(0)
            if self.announce is not None:
                self.announce(reason, first)

    @property
    def aborting(self) -> bool:
        return self.force or (self.deadline is not None and time.monotonic() >= self.deadline)

    def check(self) -> None:
        self.announce_pending()
        if self.aborting:
            raise JobCancelled("the daemon is stopping")
