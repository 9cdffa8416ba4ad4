"""What the dashboard shows of the shared folders: the queue (with why each job waits), the workers
(alive or stale, judged by whether their heartbeat counter moves on *this* process's clock, never by
comparing clocks across hosts), the jobs in progress with their stage and step, and the failed jobs.

One snapshot serves every page, API call and metrics scrape within `REFRESH_S`, so a dozen browsers
polling once a second cost the share one walk a second, not a dozen.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.ops.reading import reason
from i2v_watcher.ops.reports import failed_jobs
from i2v_watcher.ops.status import jobs_in_progress
from i2v_watcher.work.lease import heartbeat_interval, read_heartbeat, worker_folders

REFRESH_S = 0.5
MIN_STALE_S = 5.0


@dataclass
class Snapshot:
    queue: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    in_progress: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"queued": len(self.queue), "in_progress": len(self.in_progress), "failed": len(self.failed),
                "workers_alive": sum(w["state"] == "alive" for w in self.workers)}

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "queue": self.queue, "workers": self.workers,
                "in_progress": self.in_progress, "failed": self.failed, "warnings": self.warnings}


class Board:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox = Inbox(settings)
        self.stale_after = max(MIN_STALE_S, 3 * heartbeat_interval(settings))
        self._seen: dict[str, tuple[Any, float]] = {}  # worker → (counter, since when unchanged)
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
        snap.workers = self._workers(now, warn)
        progress = {job["job_id"]: job for w in snap.workers if w["state"] == "alive"
                    for job in w.get("jobs") or [] if isinstance(job, dict)}
        snap.in_progress = [{**job, **_progress_of(progress.get(job["job_id"]))}
                            for job in jobs_in_progress(self.settings, warn)]
        snap.failed = failed_jobs(self.settings, warn)
        return snap

    def _queue(self, now: float, warn: Any) -> list[dict[str, Any]]:
        try:
            self.inbox.scan()
        except InboxUnavailable as exc:
            warn(f"cannot read the inbox: {exc}")
            return []
        rows = []
        for position, row in enumerate(self.inbox.listing(), 1):
            image = None if row.image is None else str(row.image.relative_to(self.settings.inbox))
            wait = None if row.until is None else max(0.0, round(row.until - now, 1))
            rows.append({"position": position if row.why == "ready" else None, "job": row.key,
                         "why": row.why, "seconds_left": wait, "image": image})
        return rows

    def _workers(self, now: float, warn: Any) -> list[dict[str, Any]]:
        try:
            folders = worker_folders(self.settings) if self.settings.work.is_dir() else []
        except OSError as exc:
            warn(f"cannot read the work folder: {reason(exc)}")
            return []
        workers = []
        present = set()
        for folder in folders:
            present.add(folder.name)
            workers.append(self._worker(folder, now))
        self._seen = {k: v for k, v in self._seen.items() if k in present}
        return workers

    def _worker(self, folder: Path, now: float) -> dict[str, Any]:
        beat = read_heartbeat(folder)
        if beat is None:
            return {"worker_id": folder.name, "state": "unknown", "detail": "no readable heartbeat",
                    "heartbeat_age_s": None}
        counter = (beat.get("counter"), beat.get("started_at"))
        seen = self._seen.get(folder.name)
        if seen is None or seen[0] != counter:
            seen = self._seen[folder.name] = (counter, now)
        age = now - seen[1]
        if beat.get("state") == "stopped":
            state = "stopped"
        else:
            state = "alive" if age < self.stale_after else "stale"
        keys = ("host", "pid", "backend", "model", "version", "started_at", "beat_at", "published", "failed",
                "job", "job_id", "stage", "done", "total", "jobs")
        return {"worker_id": folder.name, "state": state, "heartbeat_age_s": round(age, 1),
                **{key: beat.get(key) for key in keys}}


def _progress_of(job: dict[str, Any] | None) -> dict[str, Any]:
    """The live stage and step of a job, from its worker's heartbeat (the state file says less)."""
    if job is None:
        return {"done": None, "total": None, "live_stage": None}
    done, total = job.get("done"), job.get("total")
    valid = isinstance(done, int) and isinstance(total, int) and total > 0
    return {"done": done if valid else None, "total": total if valid else None,
            "live_stage": job.get("stage")}
