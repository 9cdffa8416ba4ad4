"""The daemon's checkpoint, passed at every progress point of every stage and every loop tick: how a
stop request reaches a running job, and how the daemon shows that it is alive (the heartbeat, and a
service manager's watchdog, beat only while the checkpoint is fresh).

A signal handler only records the request here. Logging from inside a handler could deadlock on the
logger's lock, which the interrupted code may hold; the request is announced at the next check."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from i2v_watcher.errors import JobCancelled, JobCancelledByOperator

Announce = Callable[[str, bool], None]  # (signal name, first) → log it
CancelProbe = Callable[[str], str | None]  # job id → who cancelled it, in words (None: not cancelled)
CANCEL_PROBE_S = 1.0  # how often a running job looks for a cancel: well within the 15 s promised
UNCANCELLABLE = ("publish", "publishing", "published")  # past the commit point (control.cancel)


@dataclass(eq=False)
class Activity:
    """The daemon's activity checkpoint, touched at every progress point and loop tick; the heartbeat
    (and a service manager's watchdog) beat only while it is fresh. It also says what the daemon is
    doing, for `status` and the web page.

    A pipelined daemon gives each stage (generation, post-processing) a activity of its own under the
    loop's: the daemon is fresh only while the loop ticks *and* every stage busy with a job passes
    progress points; an idle stage does not count."""

    at: float = field(default_factory=time.monotonic)
    job: str | None = None
    job_id: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    published: int = 0
    failed: int = 0
    queued: int | None = None  # jobs ready in the inbox at the last scan (None: not known here)
    paused: bool = False  # an operator's pause is in force: no claim starts (control.pause)
    draining: bool = False  # and it is a drain for this run: the daemon exits once idle
    parent: Activity | None = field(default=None, repr=False)
    stages: list[Activity] = field(default_factory=list, repr=False)

    def touch(self) -> None:
        self.at = time.monotonic()

    def fresh(self, limit_s: float) -> bool:
        now = time.monotonic()
        return now - self.at < limit_s and all(
            now - part.at < limit_s for part in self.stages if part.job_id is not None)

    def silent_s(self) -> float:
        """Seconds since the stalest part that counts last passed a progress point."""
        now = time.monotonic()
        return max([now - self.at, *(now - p.at for p in self.stages if p.job_id is not None)])

    def working_on(self, job_id: str | None, job: str | None = None, stage: str | None = None) -> None:
        self.job_id, self.job, self.stage, self.done, self.total = job_id, job, stage, 0, 0
        self.touch()

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.touch()

    def part(self) -> Activity:
        """A activity of its own for one stage of a pipelined daemon."""
        child = Activity(parent=self)
        self.stages.append(child)
        return child

    def busy(self) -> list[Activity]:
        """What is working on a job now: this one, or its stages."""
        return [p for p in (self, *self.stages) if p.job_id is not None]

    def count(self, outcome: str) -> None:
        """A job finished: counted once, on the daemon's own activity."""
        root = self.parent or self
        root.published += outcome == "published"
        root.failed += outcome == "failed"


@dataclass
class StopRequest:
    """What the signal handler sets, shared by the loop and every stage."""

    stopping: bool = False
    deadline: float | None = None
    force: bool = False
    unannounced: list[tuple[str, bool]] = field(default_factory=list)
    cancel_probe: CancelProbe | None = None  # an operator's cancel of the running job (control.cancel)


class Checkpoint:
    """First signal: let the job finish within `stop_timeout_s`, then abort. Second: abort at once."""

    def __init__(self, announce: Announce | None = None, activity: Activity | None = None,
                 request: StopRequest | None = None) -> None:
        self.activity = activity or Activity()
        self.request = request or StopRequest()
        self.announce = announce
        self._probe_at = 0.0  # when the running job looks for a cancel next

    def for_stage(self) -> Checkpoint:
        """The same stop request, with a activity of the stage's own (see Activity)."""
        return Checkpoint(self.announce, self.activity.part(), self.request)

    @property
    def stopping(self) -> bool:
        return self.request.stopping

    def request_stop(self, timeout_s: float, reason: str = "stop") -> None:
        """Safe in a signal handler: assignments and a list append, no lock."""
        request = self.request
        request.unannounced.append((reason, not request.stopping))
        if request.stopping:
            request.force = True
            return
        request.stopping = True
        request.deadline = time.monotonic() + timeout_s

    def announce_pending(self) -> None:
        pending = self.request.unannounced
        while pending:
            try:
                reason, first = pending.pop(0)
            except IndexError:  # another stage's thread announced it meanwhile
                return
            if self.announce is not None:
                self.announce(reason, first)

    @property
    def aborting(self) -> bool:
        request = self.request
        return request.force or (request.deadline is not None and time.monotonic() >= request.deadline)

    def progress(self, done: int, total: int) -> None:
        """A unit of work done (a frame, a denoising step): a checkpoint that also records how far."""
        self.activity.progress(done, total)
        self.check()

    def check(self) -> None:
        """A progress point: the daemon is alive, and it stops here when it must."""
        self.activity.touch()
        self.poll()

    def poll(self) -> None:
        """Stop here when the daemon must, without counting as progress (a wait for a child)."""
        self.announce_pending()
        if self.aborting:
            raise JobCancelled("the daemon is stopping")
        now = time.monotonic()
        if now >= self._probe_at:
            self._probe_at = now + CANCEL_PROBE_S
            said = self.cancel_requested()
            if said is not None:
                raise JobCancelledByOperator(said)

    def cancel_requested(self) -> str | None:
        """Whether an operator cancelled the job this checkpoint's stage runs, read now; never once it
        publishes (the commit point, see control.cancel)."""
        probe, live = self.request.cancel_probe, self.activity
        if probe is None or live.job_id is None or live.stage in UNCANCELLABLE:
            return None
        return probe(live.job_id)
