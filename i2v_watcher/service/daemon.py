"""The daemon's life: startup(), main_loop(), shutdown(). Signal handlers only set flags once the
daemon is up (before that, a stop ends start-up at once); the loop ticks, and nothing in it blocks for
long, so a stop is always prompt. Jobs left in the work folder are resumed by the loop, after start-up,
as ordinary work."""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.inbox.watch import Candidate, Inbox, Scan, Watcher
from i2v_watcher.job.state import Job
from i2v_watcher.run.pipeline import Pipeline
from i2v_watcher.run.stages import Result, Stages, run_guarded
from i2v_watcher.service.bootstrap import load_backends, prepare_folders
from i2v_watcher.service.lifecycle import EXIT_OK, Service
from i2v_watcher.service.retention import prune
from i2v_watcher.work.claim import ClaimRefused, claim, resume_claim
from i2v_watcher.work.lease import Heartbeat, LeaseObserver
from i2v_watcher.work.store import Scratch, WorkStore

EXIT_FAILED_JOBS = 3
TICK_S = 0.5
RETENTION_EVERY_S = 3600.0
log = structlog.get_logger("i2v_watcher.service.daemon")


@dataclass
class Held:
    """A job kept in the work folder because a folder it must write is not writable: tried again
    with backoff. `error` is what was logged last, so the same error is not logged with a traceback
    every time."""

    next_at: float
    delay: float
    tries: int
    error: str = ""


class Daemon(Service):
    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        super().__init__(settings)
        self.once = once
        self.failed = 0
        self.published = 0
        self.held: dict[str, Held] = {}
        self.stages: Stages | None = None  # pipelined (pipeline_depth ≥ 2); None: one job at a time
        self._keys_in_flight: set[str] = set()  # the inbox names of the jobs in the stages

    def work(self) -> None:
        self.main_loop()

    def exit_code(self) -> int:
        # Only a batch run reports jobs it could not finish in its exit code.
        unfinished = self.failed or self.held or (self._scan is not None and self._scan.blocked)
        return EXIT_FAILED_JOBS if self.once and unfinished else EXIT_OK

    def startup(self) -> None:
        """Everything the daemon needs before it can take a job; nothing here runs a job."""
        settings = self.settings
        prepare_folders(settings)
        self.lock = self.acquire_worker()  # before anything else touches work/<worker_id>/
        binary, default, resident = load_backends(settings, self.notifier.extend)
        scratch = Scratch(settings.scratch_dir)
        self.pipeline = Pipeline(settings, resident, binary, self.checkpoint, default, scratch)
        first = resident[default]
        self.notifier.about = {"backend": first.name, "model": first.model_id}
        self.start_watching(Heartbeat(settings, self.checkpoint.activity, first.name, first.model_id))
        scratch.prune({job.id for job in self.store.leftovers()})
        if settings.pipeline_depth >= 2:
            self.stages = Stages(
                lambda part: Pipeline(settings, resident, binary, part, default, scratch), self.checkpoint,
                settings.pipeline_depth, wake=self.watcher.changed)
            self.stages.start()

    def start_watching(self, heartbeat: Heartbeat, **about: object) -> None:
        """The work store, leases, heartbeat and inbox watcher: the daemon is up after this."""
        settings = self.settings
        self.store = WorkStore(settings)
        self.observer = LeaseObserver(settings)
        self.heartbeat = heartbeat
        self.inbox = Inbox(settings)
        self.watcher = Watcher(settings)
        # A link or special file can only be moved to failed/ by a rename: on another filesystem
        # they stay in the inbox (copying would mean opening them).
        self.leave_specials = os.stat(settings.failed).st_dev != os.stat(settings.inbox).st_dev
        prune(settings)
        self.heartbeat.start()
        self.watcher.start()
        self.paused = False
        now = time.monotonic()
        self._last_full = self._last_scan = self._last_prune = now
        self._next_recover = now  # the first tick resumes what a previous run left
        self._scan: Scan | None = None
        self.up = True
        log.info("watching", inbox=str(settings.inbox), outbox=str(settings.outbox),
                 worker_id=settings.worker_id, lease_timeout_s=settings.lease_timeout_s, once=self.once,
                 **about)

    def recover(self) -> None:
        """Resume every job this worker left in its work folder (a crash, a stop, a folder that was
        not writable), each when its backoff allows."""
        now = time.monotonic()
        self._take_over_stale_workers()
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
                self._run(resumed)

    def _take_over_stale_workers(self) -> None:
        """The jobs of a worker whose lease expired (dead, frozen, stopped) are claimed like any other
        (one rename, one winner) and resumed here from the stage they reached."""
        for worker in self.observer.stale_workers():
            try:
                with os.scandir(worker) as entries:
                    folders = sorted(e.path for e in entries if e.is_dir(follow_symlinks=False)
                                     and not e.name.startswith("."))
            except OSError:  # gone meanwhile (its owner came back and cleaned up, say)
                continue
            for folder in folders:
                if self.checkpoint.stopping:
                    return
                self.store.take(Path(folder), f"the lease of worker {worker.name} expired")

    def _run(self, job: Job) -> None:
        self.store.in_flight.add(job.dir.name)
        self._keys_in_flight.add(job.state.key)
        if self.stages is not None:
            self.stages.submit(job)  # its result comes back through _collect
            return
        self._settle(run_guarded(self.pipeline, job))

    def _collect(self) -> None:
        """The outcomes of the pipelined stages' jobs."""
        if self.stages is None:
            return
        while True:
            try:
                result = self.stages.results.get_nowait()
            except queue.Empty:
                return
            self._settle(result)

    def _settle(self, result: Result) -> None:
        job, outcome, error = result.job, result.outcome, result.error
        self.store.in_flight.discard(job.dir.name)
        self._keys_in_flight.discard(job.state.key)
        previous = self.held.get(job.id)
        news = previous is None or previous.error != error
        if outcome == "held" and result.traceback:  # outside the job's own error handling
            if news:
                log.error("job left in the work folder, will retry", job_id=job.id, error=error,
                          exception=result.traceback)
            self._hold(job, error)
            return
        if outcome == "held":  # loud: an operator must fix it; an error when new, then warnings
            (log.error if news else log.warning)(
                "cannot write a destination folder: job kept in the work folder, will retry",
                job_id=job.id, job=job.state.key, stage=job.state.stage, error=error,
                tries=1 if previous is None else previous.tries + 1)
            self._hold(job, error)
            return
        self.held.pop(job.id, None)
        self.failed += outcome == "failed"
        self.published += outcome == "published"
        self.settled(job.state.metadata, outcome)

    def _hold(self, job: Job, error: str) -> None:
        previous = self.held.get(job.id)
        delay = self.settings.retry_backoff_s if previous is None else min(
            max(previous.delay * 2, self.settings.retry_backoff_s), self.settings.retry_backoff_max_s)
        tries = 1 if previous is None else previous.tries + 1
        self.held[job.id] = Held(time.monotonic() + delay, delay, tries, error)
        self._next_recover = min(self._next_recover, time.monotonic() + delay)

    def main_loop(self) -> None:
        while not self.checkpoint.stopping:
            if not self.tick():
                break
        if self.stages is not None:  # both stages finish or hand back their jobs; the loop stays alive
            self.stages.join(self._tick_while_stopping)
            self._collect()
        self.checkpoint.announce_pending()

    def _tick_while_stopping(self) -> None:
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        self._collect()

    def tick(self) -> bool:
        """One turn of the loop; False when `--once` has drained the inbox."""
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        self._collect()
        now = time.monotonic()
        if now >= self._next_recover:
            self._next_recover = now + self.settings.rescan_s
            self.recover()  # jobs left behind by a crash, a stop, or a folder that was not writable
        if now - self._last_prune >= RETENTION_EVERY_S:
            self._last_prune = now
            prune(self.settings)
        if self.paused:
            return self._wait_for_inbox()
        if self._scan_due(now):
            try:
                self._scan = self.inbox.scan(self.watcher.take_changes())
                # A job in flight in the stages may have left files in the inbox (a link or special
                # file that could not move): never claim it a second time.
                self._scan.ready = [c for c in self._scan.ready if c.key not in self._keys_in_flight]
            except InboxUnavailable as exc:
                self._pause(str(exc))
                return True
            self._last_scan = now
        scan = self._scan
        if scan is not None:  # what waits besides the job taken now
            self.checkpoint.activity.queued = max(0, len(scan.ready) - 1) + scan.waiting
        busy = self.stages is not None and not self.stages.wants_work()
        if scan and scan.ready and not busy:
            candidate = scan.ready.pop(0)
            self._scan = None  # rescan after every job: the folder may have changed meanwhile
            self._take(candidate)
            return True
        if self.once and scan is not None and scan.waiting == 0 and scan.orphans == 0 and not scan.ready \
                and not self._held_retrying() and (self.stages is None or self.stages.idle()):
            return False  # drained; a lone sidecar is waited for (orphan_sidecar_s), then reported
        wake = min(TICK_S, self._next_recover - time.monotonic())
        if scan is not None and scan.recheck_at is not None:  # a file settles, a grace period ends
            wake = min(wake, scan.recheck_at - time.monotonic())
        self.watcher.changed.wait(max(0.0, wake))
        return True

    def _take(self, candidate: Candidate) -> None:
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
            self._run(job)

    def _held_retrying(self) -> bool:
        """With `--once`: held jobs are tried `transient_retries` times before the run gives up on them
        (they stay in the work folder for the next run)."""
        return any(h.tries <= self.settings.transient_retries for h in self.held.values())

    def _scan_due(self, now: float) -> bool:
        if self._scan is None or self.watcher.changed.is_set():
            self.watcher.changed.clear()
            self._last_full = now
            return True
        if now - self._last_full >= self.settings.rescan_s:
            self._last_full = now
            return True
        if self._scan.recheck_at is not None and now >= self._scan.recheck_at:
            return True  # a grace period ended (a lone sidecar's, say): what the loop woke up for
        recheck = max(0.1, min(1.0, self.settings.settle_s / 2))
        return self._scan.waiting > 0 and now - self._last_scan >= recheck

    def _pause(self, reason: str) -> None:
        log.error("inbox unavailable: paused until it is back", reason=reason)
        self.paused = True
        self._scan = None
        self.watcher.stop()

    def _wait_for_inbox(self) -> bool:
        now = time.monotonic()
        if now - self._last_scan < min(5.0, self.settings.rescan_s):
            self.watcher.changed.wait(TICK_S)  # a stop is noticed within TICK_S
            return True
        self._last_scan = now
        try:
            self.inbox.check_available()
        except InboxUnavailable:
            return True
        log.warning("inbox is back: resuming", inbox=str(self.settings.inbox))
        self.paused = False
        self.watcher.start()
        return True

    def shutdown(self) -> None:
        self.watcher.stop()
        self.heartbeat.stop()
        self.lock.release()
        if self.held:
            log.error("jobs kept in the work folder: a folder they must write is not writable",
                      jobs=len(self.held))
        log.info("stopped", published=self.published, failed=self.failed)
