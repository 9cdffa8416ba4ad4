"""`i2v-watcher worker` (coordination = "celery"): one process per GPU, on any host, that loads its
models once and takes job ids off the Redis queue; the jobs run through the same pipelined stages as
`run` (runner.py): while one job is encoded, the next generates. See dispatcher.py for the queue's side
and why a duplicate task is harmless.

A task is acknowledged once its job is in this worker's own folder and past generation (handed to the
finishing stage, or done with): from then on the folder, not the queue, keeps the job, and a worker
that dies during the encode resumes it at its next start (or another worker takes it over), as `run`
does. So one task at a time is unacknowledged (prefetch stays at one), at most `pipeline_depth` jobs
are in the worker's folder, and a job still generating when its worker dies is redelivered (after
`visibility_timeout_s`) as before.

An operator's pause (control.pause) stops the worker consuming (consuming.py): it finishes the jobs it
has, takes no task, and its heartbeat says "paused"; a drain then ends it once idle. The tasks stay
in Redis for the other workers."""

from __future__ import annotations

import re
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from celery.exceptions import CPendingDeprecationWarning, Reject
from celery.worker import state as celery_state

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.cancel import cancelled
from i2v_watcher.control.pause import say_drained
from i2v_watcher.errors import StartupError
from i2v_watcher.job.state import JOB_ID_PATTERN, Job
from i2v_watcher.run.fail import fail_cancelled
from i2v_watcher.run.stages import Result
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.broker import BROKER_ERRORS, Broker, as_queue, safe_url
from i2v_watcher.service.consuming import Tap, tick_step
from i2v_watcher.service.lifecycle import EXIT_OK, Service
from i2v_watcher.service.parts import Beating, Part
from i2v_watcher.service.runner import Runner
from i2v_watcher.work.claim import resume_claim
from i2v_watcher.work.lease import (
    QUEUE,
    LeaseObserver,
    heartbeat_interval,
    read_heartbeat,
    worker_folders,
)
from i2v_watcher.work.routing import backend_queue, check_auto_backend
from i2v_watcher.work.store import WorkStore

WAIT_S = 0.2  # how often a task that waits for the stages looks again
log = structlog.get_logger("i2v_watcher.service.celery_worker")


class LeaseWatch(Part):
    """The other workers' heartbeats, watched while this one runs, so that a task whose job sits with a
    dead worker finds that worker's lease already judged."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.observer = LeaseObserver(settings)
        self._next = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + heartbeat_interval(self.settings)
            try:
                self.observer.stale_workers()
            except OSError:
                return


class QueueWorker(Service):
    """`i2v-watcher worker`: starts like the daemon (its own worker folder, lease and heartbeat; the
    resident backends loaded once), resumes what it left in its folder, then runs a Celery worker in
    this process (solo pool: the model resident, the stages in threads of their own) on the queue."""

    def startup(self) -> None:
        settings = self.settings
        if settings.worker_id == QUEUE:
            raise StartupError(f"worker_id {QUEUE!r} names the queue folder work/{QUEUE}/: choose another")
        prepare_folders(settings)
        self.acquire_worker()
        pipeline, _, heartbeat = self.load_backends()
        check_auto_backend(settings)  # a sidecar's `backend: auto` must mean one model on every worker
        self.store = WorkStore(settings)
        self.queue = WorkStore(as_queue(settings))
        self.reported = threading.Event()  # set by the stages whenever a job is done with (a slot is free)
        self.runner = Runner(settings, pipeline, self.checkpoint, self.store, wake=self.reported)
        self.runner.listeners += [self.report, self._held]
        self.broker = Broker(settings, self.process)
        self.leases = LeaseWatch(settings)
        self.observer = self.leases.observer
        self.tap = Tap(self.queues)
        self.compose([self.broker, Beating(heartbeat), self.leases, self.runner])

    def work(self) -> None:
        self.resume_leftovers()
        if not self.checkpoint.stopping:
            self.consume()

    def on_stop_signal(self) -> None:
        """The Celery loop stops at its next turn (within TICK_S when idle); the running jobs may finish
        within `stop_timeout_s`, and a second signal aborts them."""
        celery_state.should_stop = 0  # a warm shutdown: Celery's own flag, read by its loop

    def resume_leftovers(self) -> None:
        """The jobs this worker left in its folder (killed, stopped), before it takes new ones."""
        for job in self.store.leftovers():
            if self.checkpoint.stopping or not self._wait(self._room, self.reported, until=self._stopping):
                return
            log.info("resuming job", job_id=job.id, job=job.state.key, stage=job.state.stage)
            self._submit(job)

    @property
    def queues(self) -> list[str]:
        """The shared queue (jobs any worker may take) and the queue of each backend it loaded."""
        return [self.settings.celery_queue, *(backend_queue(self.settings, name) for name in self.loaded)]

    def consume(self) -> None:
        settings = self.settings
        app = self.broker.app
        app.steps["consumer"].add(tick_step(self.tap, self.on_timer))
        # Celery warns at every lost connection that it lets late-acknowledged tasks run on: intended.
        warnings.filterwarnings("ignore", category=CPendingDeprecationWarning)
        controller = app.WorkController(
            hostname=f"{settings.worker_id}@{socket.gethostname()}", pool_cls="solo", concurrency=1,
            queues=self.queues, loglevel="WARNING", without_mingle=True,
            without_gossip=True, without_heartbeat=True)
        log.info("consuming", worker_id=settings.worker_id, broker=safe_url(settings.broker_url),
                 queue=settings.celery_queue, queues=self.queues,
                 visibility_timeout_s=settings.visibility_timeout_s,
                 pipeline_depth=settings.pipeline_depth)
        controller.start()
        if controller.exitcode:  # Celery gave up (it has logged why)
            raise RuntimeError(f"the Celery worker stopped with exit code {controller.exitcode}")

    def tick(self) -> None:
        """Every TICK_S while the Celery loop turns, and while a task waits for the stages: the worker
        is alive (its heartbeat beats), a stop request is announced, the stages' outcomes are
        reported, the other workers' leases are watched, and the pauses read (`pause` waits for the
        heartbeat's "paused", said only once the queues are closed)."""
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        for part in self.parts:
            part.tick()
        self._claims_allowed()

    def on_timer(self) -> None:
        """The tick on the Celery loop's timer, between tasks: the queues opened again after a pause;
        a drained worker stops."""
        self.tick()
        if not self.checkpoint.activity.paused:
            self.tap.open(True)
        elif self.gate.draining and not self.runner.busy() and celery_state.should_stop is None:
            say_drained()
            celery_state.should_stop = EXIT_OK  # a warm shutdown at the loop's next turn, exit code 0

    def _claims_allowed(self) -> bool:
        """The pauses read now (control.pause.Gate.check); the queues closed at once when paused."""
        bound = structlog.contextvars.get_contextvars()
        structlog.contextvars.unbind_contextvars("job_id")  # read inside a task too: not that job's lines
        try:
            allowed = self.gate.check(self.checkpoint.activity)
            if not allowed:
                self.tap.open(False)
        finally:
            structlog.contextvars.bind_contextvars(**bound)
        return allowed

    def process(self, job_id: str) -> str:
        """One task. Returns (the task is acknowledged) once its job is past generation in this worker's
        folder, or found to be someone else's or finished already. A stop while the stages are full
        puts the task back on the queue, its job untouched in work/queue/."""
        if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
            log.error("task ignored: not a job id", job_id=repr(job_id)[:100])
            return "ignored"
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            self.checkpoint.activity.touch()
            if job_id in self.store.in_flight:
                log.info("task repeated: the job is running here already, nothing to do")
                return "nothing to do"
            if not self.runner.has_room():
                log.info("the stages are full: the task waits for a free slot, its job in the queue")
            waited = self._wait(self._room, self.reported, until=self._interrupted)
            if not waited and self.checkpoint.stopping:
                log.info("stopping: the task goes back to the queue")
                raise Reject("the worker is stopping", requeue=True)
            if not waited or not self._claims_allowed():  # the last look before the claim
                log.info("paused: the task goes back to the queue, for another worker")
                raise Reject("the worker is paused", requeue=True)
            job = self._find(job_id)
            if job is None:
                return "nothing to do"
            if job.state.stage == "claiming":
                job = resume_claim(self.settings, job)
                if job is None:
                    return "nothing to do"
            if job.state.stage == "claimed" and cancelled(job.dir) is not None:
                # Cancelled while queued, taken here before the cancel could take it (or left by a
                # `cancel` killed half-way): failed as cancelled, never generated.
                log.info("task of a cancelled job: failed without running it", job=job.state.key)
                try:
                    fail_cancelled(self.settings, job)
                    return "cancelled"
                except OSError as exc:  # failed/ away: the stages finish the failure, with their retries
                    log.warning("cannot move the cancelled job to failed/ now", error=str(exc))
            self._submit(job)
            return "handed to the finishing stage"

    def _submit(self, job: Job) -> None:
        """Into the stages; back once the job has left generation (the GPU is free for the next)."""
        generated = self.runner.submit(job)
        self._wait(generated.is_set, generated)

    def _room(self) -> bool:
        self.reported.clear()  # before looking: a job done with after the look wakes the wait at once
        return self.runner.has_room()

    def _stopping(self) -> bool:
        return self.checkpoint.stopping

    def _interrupted(self) -> bool:
        """A task's wait for the stages ends at a stop or a pause (seen by the ticks meanwhile)."""
        return self.checkpoint.stopping or self.checkpoint.activity.paused

    def _wait(self, ready: Callable[[], bool], wake: threading.Event, *,
              until: Callable[[], bool] | None = None) -> bool:
        """Tick until `ready()`, looking again when `wake` is set, or after WAIT_S; False when
        `until()` came first."""
        while not ready():
            if until is not None and until():
                return False
            self.tick()
            wake.wait(WAIT_S)
        self.tick()
        return True

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
                said = self.broker.cancelled(job_id)
                if said is not None:
                    log.info("task of a cancelled job: nothing to do", cancel=said)
                else:
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

    def _held(self, result: Result) -> None:
        """A listener of the stages: a job held back here is put back into the queue."""
        if result.outcome == "held":
            self._put_back(result.job, result.error)

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
