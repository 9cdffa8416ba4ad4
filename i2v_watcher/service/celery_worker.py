"""`i2v-watcher worker` (coordination = "celery"): one process per GPU, on any host, that loads its
models once and takes job ids off the Redis queue one at a time; the job itself is run exactly as the
daemon runs it. See dispatch.py for the queue's side and why a duplicate task is harmless."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from celery import bootsteps
from celery.exceptions import CPendingDeprecationWarning
from celery.worker import state as celery_state

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.state import JOB_ID_PATTERN, Job
from i2v_watcher.run.pipeline import Outcome, Pipeline
from i2v_watcher.service.bootstrap import load_backends, prepare_folders
from i2v_watcher.service.dispatcher import BROKER_ERRORS, Broker, as_queue, safe_url
from i2v_watcher.service.lifecycle import Service
from i2v_watcher.work.claim import resume_claim
from i2v_watcher.work.lease import (
    QUEUE,
    Heartbeat,
    LeaseObserver,
    heartbeat_interval,
    read_heartbeat,
    worker_folders,
)
from i2v_watcher.work.store import WorkStore

TICK_S = 1.0  # the worker's idle tick: activity, signals, lease history
log = structlog.get_logger("i2v_watcher.service.celery_worker")


class QueueWorker(Service):
    """`i2v-watcher worker`: starts like the daemon (its own worker folder, lease and heartbeat; the
    resident backends loaded once), resumes what it left in its folder, then runs a Celery worker in
    this process (solo pool: one job at a time, in this process, the model resident) on the queue."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.published = 0
        self.failed = 0
        self._next_observe = 0.0

    def work(self) -> None:
        self.resume_leftovers()
        if not self.checkpoint.stopping:
            self.consume()

    def startup(self) -> None:
        settings = self.settings
        if settings.worker_id == QUEUE:
            raise StartupError(f"worker_id {QUEUE!r} names the queue folder work/{QUEUE}/: choose another")
        prepare_folders(settings)
        self.lock = self.acquire_worker()
        binary, default, resident = load_backends(settings, self.notifier.extend)
        self.store = WorkStore(settings)
        self.queue = WorkStore(as_queue(settings))
        self.observer = LeaseObserver(settings)
        first = resident[default]
        self.notifier.about = {"backend": first.name, "model": first.model_id}
        self.heartbeat = Heartbeat(settings, self.checkpoint.activity, first.name, first.model_id)
        self.pipeline = Pipeline(settings, resident, binary, self.checkpoint, default)
        self.broker = Broker(settings, self.process)
        self.heartbeat.start()
        self.up = True

    def on_stop_signal(self) -> None:
        """The Celery loop stops at its next turn (within TICK_S when idle); a running job may finish
        within `stop_timeout_s`, and a second signal aborts it."""
        celery_state.should_stop = 0  # a warm shutdown: Celery's own flag, read by its loop

    def resume_leftovers(self) -> None:
        """The jobs this worker left in its folder (killed, stopped), before it takes new ones."""
        for job in self.store.leftovers():
            if self.checkpoint.stopping:
                return
            log.info("resuming job", job_id=job.id, job=job.state.key, stage=job.state.stage)
            self._work(job)

    def consume(self) -> None:
        settings = self.settings
        app = self.broker.app
        app.steps["consumer"].add(tick_step(self.tick))
        # Celery warns at every lost connection that it lets late-acknowledged tasks run on: intended.
        warnings.filterwarnings("ignore", category=CPendingDeprecationWarning)
        controller = app.WorkController(
            hostname=f"{settings.worker_id}@{socket.gethostname()}", pool_cls="solo", concurrency=1,
            queues=[settings.celery_queue], loglevel="WARNING", without_mingle=True,
            without_gossip=True, without_heartbeat=True)
        log.info("consuming", worker_id=settings.worker_id, broker=safe_url(settings.broker_url),
                 queue=settings.celery_queue, visibility_timeout_s=settings.visibility_timeout_s)
        controller.start()
        if controller.exitcode:  # Celery gave up (it has logged why)
            raise RuntimeError(f"the Celery worker stopped with exit code {controller.exitcode}")

    def tick(self) -> None:
        """Every TICK_S while the Celery loop turns: the worker is alive (its heartbeat beats), a stop
        request is announced, and the other workers' heartbeats are watched, so that a task whose job
        sits with a dead worker finds that worker's lease already judged."""
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        now = time.monotonic()
        if now >= self._next_observe:
            self._next_observe = now + heartbeat_interval(self.settings)
            with contextlib.suppress(OSError):
                self.observer.stale_workers()

    def process(self, job_id: str) -> str:
        """One task. Returns (the task is acknowledged) once the job is published, failed, put back into
        the queue, or found to be someone else's or finished already."""
        if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
            log.error("task ignored: not a job id", job_id=repr(job_id)[:100])
            return "ignored"
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            self.checkpoint.activity.touch()
            job = self._find(job_id)
            if job is None:
                return "nothing to do"
            return self._work(job)

    def _find(self, job_id: str) -> Job | None:
        """The job named by a task, in this worker's folder: ours already (a redelivery), taken from the
        queue with one rename, or taken over from a worker whose lease expired. None when another
        worker has it (alive), or it is finished."""
        for _ in range(3):  # a folder that moves while we look is looked for again
            if (self.store.root / job_id).is_dir():
                mine = [job for job in self.store.leftovers() if job.id == job_id]
                return mine[0] if mine else None  # a folder that cannot be read is reported there
            queued = self.queue.root / job_id
            if queued.is_dir():
                job = self.store.take(queued, "queue")
                if job is not None:
                    log.info("took job from the queue", job=job.state.key, stage=job.state.stage)
                    return job
                continue
            owner = self._owner_of(job_id)
            if owner is None:
                log.info("job not found in the work folder: finished already, nothing to do")
                return None
            if not self._expired(owner):
                log.info("job is with a live worker: left to it", worker=owner.name)
                return None
            job = self.store.take(owner / job_id, f"the lease of worker {owner.name} expired")
            if job is not None:
                return job
        return None

    def _owner_of(self, job_id: str) -> Path | None:
        owners = [w for w in worker_folders(self.settings, besides=self.settings.worker_id)
                  if (w / job_id).is_dir()]
        return owners[0] if owners else None

    def _expired(self, owner: Path) -> bool:
        """Whether the worker holding a job is gone: its heartbeat says it stopped, or its counter has
        not moved for `lease_timeout_s` on this clock (watched since this worker started, or waited
        for here). A counter that moves meanwhile means it is alive."""
        settings = self.settings
        deadline = time.monotonic() + settings.lease_timeout_s + heartbeat_interval(settings)

        def counter() -> Any:
            beat = read_heartbeat(owner)
            return None if beat is None else (beat.get("counter"), beat.get("started_at"))

        first = counter()
        while True:
            if owner.name in {p.name for p in self.observer.stale_workers()}:
                return True
            if counter() != first or self.checkpoint.stopping or time.monotonic() >= deadline:
                return False
            self.checkpoint.activity.touch()  # waiting for another worker's lease is not being hung
            time.sleep(min(1.0, heartbeat_interval(settings)))

    def _work(self, job: Job) -> str:
        if job.state.stage == "claiming":
            resumed = resume_claim(self.settings, job)
            if resumed is None:
                return "nothing to do"
            job = resumed
        outcome: Outcome
        try:
            outcome = self.pipeline.run(job)
            error = self.pipeline.held_error
        except Exception as exc:  # outside the job's own error handling: tried again later
            log.exception("job could not be run here", job_id=job.id)
            outcome, error = "held", f"{type(exc).__name__}: {exc}"
        self.published += outcome == "published"
        self.failed += outcome == "failed"
        self.settled(job.state.metadata, outcome)
        if outcome == "held":
            self._put_back(job, error)
        return outcome

    def _put_back(self, job: Job, error: str) -> None:
        """A job this worker cannot finish now (a destination it cannot write): back into work/queue/,
        with a task that comes due after the longest retry delay, for any worker to try again."""
        delay = min(self.settings.retry_backoff_max_s, self.settings.visibility_timeout_s / 2)
        log.error("cannot finish the job here: put back into the queue, will retry", job_id=job.id,
                  job=job.state.key, stage=job.state.stage, error=error, retry_in_s=delay)
        if job.dir.is_dir() and self.queue.take(job.dir, "queue") is not None:
            try:
                self.broker.enqueue(job.id, countdown=delay)
            except BROKER_ERRORS as exc:  # `run` sends it, as it does every queued job without a task
                log.warning("could not enqueue the job again", job_id=job.id, error=str(exc))

    def shutdown(self) -> None:
        self.checkpoint.announce_pending()
        self.heartbeat.stop()
        self.lock.release()
        self.broker.close()
        log.info("stopped", published=self.published, failed=self.failed)


def tick_step(tick: Callable[[], None]) -> type[bootsteps.StartStopStep]:
    """A consumer step that calls `tick` every TICK_S on the Celery loop's own timer; started again
    after every reconnection to the broker (the consumer restarts its steps then)."""

    class Tick(bootsteps.StartStopStep):  # type: ignore[misc]
        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            self.tref = parent.timer.call_repeatedly(TICK_S, tick)

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        def shutdown(self, parent: Any) -> None:
            self.stop(parent)

    return Tick
