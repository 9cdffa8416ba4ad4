"""How a stop request reaches a running job: checked at every progress point of every stage."""

from __future__ import annotations

import time

from i2v_watcher.errors import JobCancelled


class Cancel:
    """First signal: let the job finish within `stop_timeout_s`, then abort. Second: abort at once."""

    def __init__(self) -> None:
        self.stopping = False
        self.deadline: float | None = None
        self.force = False

    def request_stop(self, timeout_s: float) -> None:
        if self.stopping:
            self.force = True
            return
        self.stopping = True
        self.deadline = time.monotonic() + timeout_s

    @property
    def aborting(self) -> bool:
        return self.force or (self.deadline is not None and time.monotonic() >= self.deadline)

    def check(self) -> None:
        if self.aborting:
            raise JobCancelled("the daemon is stopping")
