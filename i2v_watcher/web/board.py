"""What the dashboard shows of the shared folders: the queue (with why each job waits: inbox.queue
says what is queued, as for `status`), the workers (work.survey: judged as `status` judges them, on the
share's clock, never by comparing clocks across hosts), the jobs in progress with their stage and
step, and the failed jobs.

One snapshot serves every page, API call and metrics scrape within `REFRESH_S`, so a dozen browsers
polling once a second cost the share one walk a second, not a dozen.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.inbox.queue import queued_jobs
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.records import WorkerRow
from i2v_watcher.ops.reports import failed_jobs
from i2v_watcher.ops.status import jobs_in_progress, workers

REFRESH_S = 0.5


@dataclass
class Snapshot:
    queue: list[dict[str, Any]] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    in_progress: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"queued": len(self.queue), "in_progress": len(self.in_progress), "failed": len(self.failed),
                "workers_alive": sum(w.up for w in self.workers)}

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "queue": self.queue,
                "workers": [w.model_dump(mode="json") for w in self.workers],
                "in_progress": self.in_progress, "failed": self.failed, "warnings": self.warnings}


class Board:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox = Inbox(settings)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0

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
        snap.queue = self._queue(now, warn)
        snap.workers = workers(self.settings, warn)
        progress = {job.job_id: job.model_dump() for w in snap.workers if w.up for job in w.jobs}
        snap.in_progress = [{**job, **_progress_of(progress.get(job["job_id"]))}
                            for job in jobs_in_progress(self.settings, warn)]
        snap.failed = failed_jobs(self.settings, warn)
        return snap

    def _queue(self, now: float, warn: Any) -> list[dict[str, Any]]:
        try:
            queued = queued_jobs(self.inbox, warn)
        except InboxUnavailable as exc:
            warn(f"cannot read the inbox: {exc}")
            return []
        rows = []
        for position, row in enumerate(queued, 1):
            image = None if row.image is None else str(row.image.relative_to(self.settings.inbox))
            wait = None if row.until is None else max(0.0, round(row.until - now, 1))
            rows.append({"position": position if row.why == "ready" else None, "job": row.key,
                         "why": row.why, "seconds_left": wait, "image": image})
        return rows


def _progress_of(job: dict[str, Any] | None) -> dict[str, Any]:
    """The live stage and step of a job, from its worker's heartbeat (the state file says less)."""
    if job is None:
        return {"done": None, "total": None, "live_stage": None}
    done, total = job.get("done"), job.get("total")
    valid = isinstance(done, int) and isinstance(total, int) and total > 0
    return {"done": done if valid else None, "total": total if valid else None,
            "live_stage": job.get("stage")}
