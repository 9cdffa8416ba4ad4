"""The recovery part: every `rescan_s` (and at the first tick, for what a previous run left), the jobs of
workers whose lease expired are taken over, and the jobs left in this worker's folder (a crash, a stop,
a folder that was not writable) are resumed, each when its backoff allows. It also listens to the
stages: a job held back (a destination it cannot write) is kept and tried again with backoff."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.state import Job
from i2v_watcher.run.stages import Result
from i2v_watcher.service.parts import Part, Schedule
from i2v_watcher.work.claim import resume_claim
from i2v_watcher.work.lease import LeaseObserver
from i2v_watcher.work.store import WorkStore

log = structlog.get_logger("i2v_watcher.service.recovery")


@dataclass
class Held:
    """A job kept in the work folder because a folder it must write is not writable: tried again
    with backoff. `error` is what was logged last, so the same error is not logged with a traceback
    every time."""

    next_at: float
    delay: float
    tries: int
    error: str = ""


def take_over_stale_workers(observer: LeaseObserver, store: WorkStore, checkpoint: Checkpoint) -> None:
    """The jobs of a worker whose lease expired (dead, frozen, stopped) are claimed like any other
    (one rename, one winner) into `store`, the takeover recorded in the job."""
    for worker in observer.stale_workers():
        try:
            with os.scandir(worker) as entries:
                folders = sorted(e.path for e in entries if e.is_dir(follow_symlinks=False)
                                 and not e.name.startswith("."))
        except OSError:  # gone meanwhile (its owner came back and cleaned up, say)
            continue
        for folder in folders:
            if checkpoint.stopping:
                return
            store.take(Path(folder), f"the lease of worker {worker.name} expired")


class Recovery(Part):
    def __init__(self, settings: Settings, store: WorkStore, checkpoint: Checkpoint,
                 resume: Callable[[Job], None]) -> None:
        self.settings = settings
        self.store = store
        self.checkpoint = checkpoint
        self.resume = resume
        self.observer = LeaseObserver(settings)
        self.held: dict[str, Held] = {}
        self.schedule = Schedule(settings.rescan_s)  # the first tick resumes what a previous run left

    def tick(self) -> None:
        if self.schedule.due():
            self.recover()

    def next_at(self) -> float:
        return self.schedule.at

    def busy(self) -> bool:
        """With `--once`: held jobs are tried `transient_retries` times before the run gives up on them
        (they stay in the work folder for the next run)."""
        return any(h.tries <= self.settings.transient_retries for h in self.held.values())

    def recover(self) -> None:
        now = time.monotonic()
        take_over_stale_workers(self.observer, self.store, self.checkpoint)
        for job in self.store.leftovers():
            if self.checkpoint.stopping:
                return
            held = self.held.get(job.id)
            if held is not None and now < held.next_at:
                continue
            if held is None:
                log.info("resuming job", job_id=job.id, job=job.state.key, stage=job.state.stage)
            resumed = resume_claim(self.settings, job) if job.state.stage == "claiming" else job
            if resumed is not None:
                self.resume(resumed)

    def settled(self, result: Result) -> None:
        """A listener of the stages: a held job is logged (an error when new, then warnings: an
        operator must fix it) and tried again after its backoff; any other outcome ends its hold."""
        job, error = result.job, result.error
        previous = self.held.get(job.id)
        news = previous is None or previous.error != error
        if result.outcome != "held":
            self.held.pop(job.id, None)
        elif result.traceback:  # outside the job's own error handling
            if news:
                log.error("job left in the work folder, will retry", job_id=job.id, error=error,
                          exception=result.traceback)
            self._hold(job, error)
        else:
            (log.error if news else log.warning)(
                "cannot write a destination folder: job kept in the work folder, will retry",
                job_id=job.id, job=job.state.key, stage=job.state.stage, error=error,
                tries=1 if previous is None else previous.tries + 1)
            self._hold(job, error)

    def _hold(self, job: Job, error: str) -> None:
        previous = self.held.get(job.id)
        delay = self.settings.retry_backoff_s if previous is None else min(
            max(previous.delay * 2, self.settings.retry_backoff_s), self.settings.retry_backoff_max_s)
        tries = 1 if previous is None else previous.tries + 1
        self.held[job.id] = Held(time.monotonic() + delay, delay, tries, error)
        self.schedule.sooner(delay)

    def stop(self) -> None:
        if self.held:
            log.error("jobs kept in the work folder: a folder they must write is not writable",
                      jobs=len(self.held))
