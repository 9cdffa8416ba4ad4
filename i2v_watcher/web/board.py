"""What the dashboard shows of the shared folders: the queue (with why each job waits: inbox.queue
says what is queued, as for `status`), the workers (work.survey: judged as `status` judges them, on the
share's clock, never by comparing clocks across hosts), the jobs in progress with their stage and
step, and the failed jobs.

One snapshot serves every page, API call and metrics scrape within `REFRESH_S`, so a dozen browsers
polling once a second cost the share one walk a second, not a dozen. A failure report is read once
per version (ops.reports.ReportCache), and pages show one page of each list (`page`) with the whole
count: an inbox of 50,000 files costs each refresh a page of rows, not 50,000.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.pause import ALL, pause_line, pauses
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.inbox.queue import queued_jobs
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.worker_records import WorkerRow
from i2v_watcher.ops.reports import ReportCache
from i2v_watcher.ops.status import jobs_in_progress, workers
from i2v_watcher.web.actions import RecentActions
from i2v_watcher.work.routing import unroutable

REFRESH_S = 0.5
ACTIONS_SHOWN = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Snapshot:
    queue: list[dict[str, Any]] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    in_progress: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pauses: list[str] = field(default_factory=list)  # the operators' pauses in force, in words
    paused: dict[str, dict[str, Any]] = field(default_factory=dict)  # and as records, by whom they pause
    actions: list[dict[str, Any]] = field(default_factory=list)  # the newest first (web.actions)
    # When each failure report was written (its mtime, ns): the share's clock, as the follow page needs.
    failed_written_ns: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {"queued": len(self.queue), "in_progress": len(self.in_progress), "failed": len(self.failed),
                "workers_alive": sum(w.up for w in self.workers)}

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "queue": self.queue,
                "workers": [w.model_dump(mode="json") for w in self.workers],
                "in_progress": self.in_progress, "failed": self.failed, "warnings": self.warnings,
                "pauses": self.pauses, "paused": self.paused, "actions": self.actions}

    def pause_state(self, worker: WorkerRow) -> str | None:
        """A running worker's pause as the board says it: "pausing" from the pause until its heartbeat
        says paused (a dashboard's button does not wait for that, unlike `i2v-watcher pause`), then
        "paused"; "resuming" from a resume until its heartbeat says so."""
        if not worker.up:
            return None
        held = worker.worker_id in self.paused or ALL in self.paused
        if held:
            return "paused" if worker.paused else "pausing"
        return "resuming" if worker.paused else None

    def drains(self, worker: WorkerRow) -> bool:
        """A drain is among the pauses that hold this worker."""
        return any(self.paused.get(whom, {}).get("drain") for whom in (worker.worker_id, ALL))


class Board:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox = Inbox(settings)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0
        self._reports = ReportCache()
        self._actions = RecentActions(settings)

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._taken_at >= REFRESH_S:
                self._snapshot = self._take(now)
                self._taken_at = now
            return self._snapshot

    def changed(self) -> None:
        """This process changed the folders (a submit, a retry): the next page reads them again."""
        with self._lock:
            self._snapshot = None

    def _take(self, now: float) -> Snapshot:
        snap = Snapshot()
        warn = snap.warnings.append
        snap.workers = workers(self.settings, warn)
        snap.queue = self._queue(now, warn, snap.workers)
        progress = {job.job_id: job.model_dump() for w in snap.workers if w.up for job in w.jobs}
        snap.in_progress = [{**job, **_progress_of(progress.get(job["job_id"]))}
                            for job in jobs_in_progress(self.settings, warn)]
        failed = self._reports.read(self.settings, warn)
        snap.failed = [entry for entry, _ in failed]
        snap.failed_written_ns = {entry["name"]: written for entry, written in failed}
        snap.paused = {whom: r.model_dump(mode="json") for whom, r in pauses(self.settings).items()}
        snap.pauses = [pause_line(whom, record) for whom, record in snap.paused.items()]
        snap.actions = self._actions.newest(ACTIONS_SHOWN)
        return snap

    def _queue(self, now: float, warn: Any, found: list[WorkerRow]) -> list[dict[str, Any]]:
        try:  # a job whose backend no live worker loaded waits for one (work.routing)
            queued = unroutable(queued_jobs(self.inbox, warn), found)
        except InboxUnavailable as exc:
            warn(f"cannot read the inbox: {exc}")
            return []
        rows = []
        inside = len(str(self.settings.inbox)) + 1  # every image is below the inbox: cut, not relative_to
        for position, row in enumerate(queued, 1):
            image = None if row.image is None else str(row.image)[inside:]
            wait = None if row.until is None else max(0.0, round(row.until - now, 1))
            rows.append({"position": position if row.why == "ready" else None, "job": row.key,
                         "why": row.why, "seconds_left": wait, "image": image, "priority": row.priority})
        return rows


def _progress_of(job: dict[str, Any] | None) -> dict[str, Any]:
    """The live stage and step of a job, from its worker's heartbeat (the state file says less)."""
    if job is None:
        return {"done": None, "total": None, "live_stage": None}
    done, total = job.get("done"), job.get("total")
    valid = isinstance(done, int) and isinstance(total, int) and total > 0
    return {"done": done if valid else None, "total": total if valid else None,
            "live_stage": job.get("stage")}


@dataclass
class Page:
    """One page of a list: its rows, its number (1-based) and how many pages the list has."""

    rows: list[Any]
    number: int
    pages: int


def page(rows: list[Any], number: int, size: int) -> Page:
    """Page `number` (from 1) of `rows`: empty past the end, so that a script reading page after page
    stops."""
    return Page(rows[(number - 1) * size:number * size], number, max(1, math.ceil(len(rows) / size)))


def share_time(path: Path) -> str:
    """When a file that this process just put on the share got there, by the share's clock (its ctime,
    which a rename sets and nobody can set back; else its folder's mtime), as an ISO time: the follow
    page compares it with the times of the files a worker writes later, both stamped by the file
    server, never with this host's clock or a worker's."""
    try:
        stamp = os.lstat(path).st_ctime_ns
    except OSError:  # already claimed by a daemon: the inbox folder changed when it was moved in and out
        stamp = os.stat(path.parent).st_mtime_ns
    # Whole microseconds, rounded down (integers: a float could round up past a file written in the
    # same instant, on a share that stamps whole seconds).
    return (EPOCH + timedelta(microseconds=stamp // 1000)).isoformat(timespec="microseconds")


def since_ns(since: str) -> int:
    """share_time's answer as ns since the epoch; 0 (everything counts) when it is missing or garbled."""
    try:
        when = datetime.fromisoformat(since)
    except ValueError:
        return 0
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(microseconds=1) * 1000
