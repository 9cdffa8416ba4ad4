"""The watch + claim part: the inbox watched and scanned, each settled job claimed into the work store
and handed to the service's sink (the stages of the folder daemon, the Celery queue of the
dispatcher), one at a time and only when the sink wants one. An inbox that goes away pauses the intake
(loudly) until it is back; one job's files never stop it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.pause import Gate
from i2v_watcher.control.priority import forget_priority
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.inbox.watch import Candidate, Inbox, Scan, Watcher
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.state import Job
from i2v_watcher.run.markers import MarkerRefused, approve_marker
from i2v_watcher.service.parts import Part
from i2v_watcher.work.claim import ClaimRefused, claim
from i2v_watcher.work.routing import Router
from i2v_watcher.work.store import WorkStore

TICK_S = 0.5  # the longest a loop that watches the inbox sleeps: a stop is noticed within it
log = structlog.get_logger("i2v_watcher.service.intake")


class Intake(Part):
    def __init__(self, settings: Settings, store: WorkStore, activity: Activity, sink: Callable[[Job], None],
                 *, wants_work: Callable[[], bool] = lambda: True,
                 in_flight: Callable[[], set[str]] = set, router: Router | None = None,
                 gate: Gate | None = None) -> None:
        self.settings = settings
        self.router = router  # which jobs are this worker's (None: all of them, as a dispatcher's)
        self.store = store
        self.activity = activity
        self.sink = sink
        self.wants_work = wants_work
        self.in_flight = in_flight  # the inbox names of jobs the sink still has
        self.inbox = Inbox(settings)
        self.watcher = Watcher(settings)
        self.paused = False  # the inbox went away (not an operator's pause: that is the gate's)
        self.gate = gate or Gate(settings)  # the service's, made at its start (service.lifecycle)
        self.scan: Scan | None = None
        self._last_full = self._last_scan = time.monotonic()
        # A link or special file can only be moved to failed/ by a rename: on another filesystem
        # they stay in the inbox (copying would mean opening them).
        self.leave_specials = os.stat(settings.failed).st_dev != os.stat(settings.inbox).st_dev

    def announce(self, **about: object) -> None:
        """The service is up and watching (its one start-up line)."""
        settings = self.settings
        log.info("watching", inbox=str(settings.inbox), outbox=str(settings.outbox),
                 worker_id=settings.worker_id, lease_timeout_s=settings.lease_timeout_s, **about)

    def start(self) -> None:
        self.watcher.start()
        self._last_full = self._last_scan = time.monotonic()

    def stop(self) -> None:
        self.watcher.stop()

    def wait(self, seconds: float) -> None:
        """Sleep until the inbox changes (or a stage reports: the same event), at most `seconds`."""
        self.watcher.changed.wait(max(0.0, seconds))

    def next_at(self) -> float:
        recheck = self.scan.recheck_at if self.scan is not None else None  # a file settles, say
        return time.monotonic() + TICK_S if recheck is None else min(recheck, time.monotonic() + TICK_S)

    def drained(self) -> bool:
        """Nothing ready or waiting to settle in the inbox (a lone sidecar is waited for, then reported)."""
        scan = self.scan
        return scan is not None and scan.waiting == 0 and scan.orphans == 0 and not scan.ready

    def drained_after_full_scan(self) -> bool:
        """drained(), by a scan of the whole inbox made now (a job found is taken)."""
        self.watcher.lost()
        self.scan = None
        return not self.take_one() and self.drained()

    def blocked(self) -> int:
        return self.scan.blocked if self.scan is not None else 0

    def take_one(self) -> bool:
        """Scan when due and hand one ready job to the sink; True when the loop should turn again at
        once (a job was taken, or the paused intake waited already)."""
        if self.paused:
            self._wait_for_inbox()
            return True
        if not self.claims_allowed():  # an operator's pause: nothing scanned, nothing claimed
            return False
        self.watcher.check()  # an observer that lost a thread is replaced at once, not at the next rescan
        now = time.monotonic()
        if self._scan_due(now):
            try:
                scan = self.inbox.scan(self.watcher.take_changes())
            except InboxUnavailable as exc:
                self._pause(str(exc))
                return True
            # A job the sink still has may have left files in the inbox (a link or special file that
            # could not move): never claim it a second time.
            in_flight = self.in_flight()
            scan.ready = [c for c in scan.ready if c.key not in in_flight]
            if self.router is not None:
                scan.ready, ends = self.router.route(scan.ready)
                if ends is not None and ends > now:  # a job's wait for a worker ends: look again then
                    scan.recheck_at = min(ends, scan.recheck_at or ends)
            self.scan = scan
            self._last_scan = now
        if self.scan is not None:  # what waits besides the job taken now
            self.activity.queued = max(0, len(self.scan.ready) - 1) + self.scan.waiting
        if self.scan and self.scan.ready and self.wants_work() and self.claims_allowed():
            candidate = self.scan.ready.pop(0)
            self.scan = None  # rescan after every job: the folder may have changed meanwhile
            self._take(candidate)
            return True
        return False

    def claims_allowed(self) -> bool:
        """No operator's pause in force (control.pause.Gate.check): checked every turn, so that the
        heartbeat says "paused" while idle too, and once more right before each claim."""
        return self.gate.check(self.activity)

    def draining(self) -> bool:
        """A drain (see control.pause) asks this worker to exit once idle."""
        return self.activity.paused and self.gate.draining

    def _take(self, candidate: Candidate) -> None:
        if candidate.marker is not None:  # an approval, not a job: acted on once, then gone
            refused = self._approve(candidate, candidate.marker)
            if refused is None:
                return
            # It approves nothing: to failed/ with a report saying why, as any file that is no job.
            candidate = replace(candidate, marker=None, extra=(candidate.marker,), problem=refused)
        try:
            job = claim(self.settings, self.store, candidate, leave_specials=self.leave_specials)
            self.inbox.taken(candidate)  # not offered again while its files are as they were
        except InboxUnavailable as exc:
            self._pause(str(exc))
            return
        except ClaimRefused as exc:
            self.inbox.block(candidate, str(exc))
            return
        except Exception as exc:  # one job's files never stop the daemon
            log.exception("claim failed", job=candidate.key)
            self.inbox.block(candidate, f"{type(exc).__name__}: {exc}")
            return
        if job is not None:
            forget_priority(self.settings, candidate.key)  # claimed: a later job of that name starts afresh
            if self.router is not None:
                self.router.claimed(candidate)
            self.sink(job)

    def _approve(self, candidate: Candidate, marker: Path) -> str | None:
        """Act on an approve marker; the message of one that approves nothing (None otherwise)."""
        try:
            if not approve_marker(self.settings, marker):
                self.inbox.taken(candidate)  # its draft is on its way: looked at again after rescan_s
        except MarkerRefused as exc:
            return str(exc)
        except Exception as exc:  # the share's trouble: the marker stays, tried again later
            log.warning("approve marker not acted on", marker=str(marker), error=str(exc))
            self.inbox.block(candidate, f"{type(exc).__name__}: {exc}")
        # The final just written into the inbox: the next scan walks the whole inbox, so that it is
        # waited for even before the watcher's news of it (`run --once` would end without it).
        self.watcher.lost()
        return None

    def _scan_due(self, now: float) -> bool:
        if self.scan is None or self.watcher.changed.is_set():
            self.watcher.changed.clear()
            self._last_full = now
            return True
        if now - self._last_full >= self.settings.rescan_s:
            self._last_full = now
            return True
        if self.scan.recheck_at is not None and now >= self.scan.recheck_at:
            return True  # a grace period ended (a lone sidecar's, say): what the loop woke up for
        recheck = max(0.1, min(1.0, self.settings.settle_s / 2))
        return self.scan.waiting > 0 and now - self._last_scan >= recheck

    def _pause(self, reason: str) -> None:
        log.error("inbox unavailable: paused until it is back", reason=reason)
        self.paused = True
        self.scan = None
        self.watcher.stop()

    def _wait_for_inbox(self) -> None:
        now = time.monotonic()
        if now - self._last_scan < min(5.0, self.settings.rescan_s):
            self.watcher.changed.wait(TICK_S)  # a stop is noticed within TICK_S
            return
        self._last_scan = now
        try:
            self.inbox.check_available()
        except InboxUnavailable:
            return
        log.warning("inbox is back: resuming", inbox=str(self.settings.inbox))
        self.paused = False
        self.watcher.start()
