"""The daemon's checkpoint, passed at every progress point of every stage and every loop tick: how a
stop request reaches a running job, and how the daemon shows that it is alive (the heartbeat, and a
service manager's watchdog, beat only while the checkpoint is fresh).

A signal handler only records the request here. Logging from inside a handler could deadlock on the
logger's lock, which the interrupted code may hold; the request is announced at the next check."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from i2v_watcher.errors import JobCancelled

Announce = Callable[[str, bool], None]  # (signal name, first) → log it


@dataclass
class Liveness:
    """The daemon's liveness checkpoint, touched at every progress point and loop tick; the heartbeat
    (and a service manager's watchdog) beat only while it is fresh. It also says what the daemon is
    doing, for `status` and the web page."""

    at: float = field(default_factory=time.monotonic)
    job: str | None = None
    job_id: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    published: int = 0
    failed: int = 0
    queued: int | None = None  # jobs ready in the inbox at the last scan (None: not known here)

    def touch(self) -> None:
        self.at = time.monotonic()

    def fresh(self, limit_s: float) -> bool:
        return time.monotonic() - self.at < limit_s

    def working_on(self, job_id: str | None, job: str | None = None, stage: str | None = None) -> None:
        self.job_id, self.job, self.stage, self.done, self.total = job_id, job, stage, 0, 0
        self.touch()

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.touch()


class Cancel:
    """First signal: let the job finish within `stop_timeout_s`, then abort. Second: abort at once."""

    def __init__(self, announce: Announce | None = None, liveness: Liveness | None = None) -> None:
        self.liveness = liveness or Liveness()
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

    def progress(self, done: int, total: int) -> None:
        """A unit of work done (a frame, a denoising step): a checkpoint that also records how far."""
        self.liveness.progress(done, total)
        self.check()

    def check(self) -> None:
        """A progress point: the daemon is alive, and it stops here when it must."""
        self.liveness.touch()
        self.poll()

    def poll(self) -> None:
        """Stop here when the daemon must, without counting as progress (a wait for a child)."""
        self.announce_pending()
        if self.aborting:
            raise JobCancelled("the daemon is stopping")
