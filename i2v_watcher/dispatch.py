"""Celery mode (`coordination = "celery"`): `run` watches the inbox and claims each settled job into
work/queue/<job_id>/, then puts the job id on a Redis queue; `worker` processes, one per GPU on any
number of hosts, each with its models loaded once, take the ids off the queue one at a time.

Exactly-once comes from the folders, not from the queue. A task carries only a job id. The worker that
gets it moves the job folder out of work/queue/ into its own work/<worker_id>/ with one rename: of two
workers handed the same id, one wins and the other finds nothing to do; and publishing reserves names
per job id, as in folder mode. So the queue may lose a task (Redis restarted without persistence) or
deliver one twice (a worker died and the visibility timeout passed): `run` sends again the task of any
job still in work/queue/ that has none on record, and a duplicate is a no-op.

Imported only in celery mode, so that the core install needs no celery.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import structlog
from celery import Celery, bootsteps
from celery.exceptions import CPendingDeprecationWarning
from celery.worker import state as celery_state
from kombu.exceptions import KombuError
from kombu.utils.url import maybe_sanitize_url

from i2v_watcher.cancel import Cancel
from i2v_watcher.claim import resume_claim
from i2v_watcher.config import Settings
from i2v_watcher.daemon import EXIT_FAILED_JOBS, Daemon, load_backends, prepare_folders, stop_announcer
from i2v_watcher.errors import StartupError, StartupInterrupted
from i2v_watcher.job import JOB_ID_PATTERN, STATE_FILE, Job
from i2v_watcher.lease import (
    QUEUE,
    Heartbeat,
    LeaseObserver,
    acquire_worker,
    heartbeat_interval,
    read_heartbeat,
)
from i2v_watcher.pipeline import Outcome, Pipeline
from i2v_watcher.workstore import WorkStore

TASK = "i2v_watcher.process_job"
BROKER_ERRORS = (KombuError, redis.RedisError, OSError)
BROKER_RETRY_S = 2.0  # while the broker is down, `run` tries again this often
TICK_S = 1.0  # the worker's idle tick: liveness, signals, lease history
# A send that cannot reach the broker gives up after about 1.5 s; the job waits in work/queue/.
SEND_RETRY = {"max_retries": 2, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
log = structlog.get_logger("i2v_watcher.dispatch")


def as_queue(settings: Settings) -> Settings:
    """The settings of the queue folder: work/queue/ is a worker named "queue", whose lease the one
    `run` of a celery deployment holds, and which no worker ever judges stale."""
    return settings.model_copy(update={"worker_id": QUEUE})


def safe_url(url: str | None) -> str:
    return str(maybe_sanitize_url(url or ""))


def make_app(settings: Settings) -> Celery:
    """The Celery app: tasks acknowledged only once their job is finished, redelivered when their worker
    dies (after `visibility_timeout_s`), one at a time per worker, JSON only, no result backend."""
    visibility = settings.visibility_timeout_s
    app = Celery("i2v_watcher", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options={
            "visibility_timeout": visibility,
            # kombu looks for deliveries older than the visibility timeout every few seconds (by
            # default only every 100 s), so a dead worker's task comes back soon after the timeout.
            "unacked_restore_interval": max(1.0, min(10.0, visibility / 10)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for the broker, however long it is away
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.celery_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        # Remote control stays on: besides `celery inspect`, its subscription is the socket on which a
        # worker notices that the broker went away even while it consumes nothing (its one task in
        # flight, whose acknowledgement then fails); without it, such a worker would wait forever.
        worker_enable_remote_control=True,
        worker_send_task_events=False,
        # A job in flight when the broker connection drops runs to its end (its folder says what is
        # done); a redelivered copy of its task finds nothing to do.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.task(name=TASK, ignore_result=True)(process_job)
    return app


def process_job(job_id: str) -> str:
    """The task: run one job, named by its id, in the worker process that received it."""
    if _active is None:
        raise RuntimeError("process_job runs only inside `i2v-watcher worker`")
    return _active.process(job_id)


class Broker:
    """The Redis side: sending a job's task, and the record of when each queued job's task was last
    sent (a hash in the same Redis). A task is always sent before it is recorded: a crash in between
    leaves a task without a record (sent again, harmless), never a record without a task. A Redis
    that restarts empty loses both, and `run` sends again every job in work/queue/."""

    def __init__(self, settings: Settings) -> None:
        assert settings.broker_url is not None  # the settings' own check in celery mode
        self.settings = settings
        self.app = make_app(settings)
        self.key = f"i2v-watcher:{settings.celery_queue}:enqueued"
        self.redis = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=5, socket_timeout=30)

    def enqueue(self, job_id: str, countdown: float | None = None) -> None:
        self.app.send_task(TASK, args=[job_id], queue=self.settings.celery_queue, countdown=countdown,
                           retry=True, retry_policy=SEND_RETRY)
        self.redis.hset(self.key, job_id, repr(time.time()))

    def sent(self) -> dict[str, float]:
        """Job id → when its task was last sent (this Redis's record, in `time.time()` seconds)."""
        found: dict[str, float] = {}
        for key, value in self.redis.hgetall(self.key).items():
            with contextlib.suppress(ValueError):
                found[key.decode() if isinstance(key, bytes) else key] = float(value)
        return found

    def forget(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.hdel(self.key, *job_ids)

    def close(self) -> None:
        with contextlib.suppress(*BROKER_ERRORS):
            self.redis.close()
        with contextlib.suppress(*BROKER_ERRORS):
            self.app.close()


class Dispatcher(Daemon):
    """`run` in celery mode: the daemon's own loop (watch, settle, claim, recover), but jobs are claimed
    into work/queue/ and their ids enqueued instead of run; it never generates. At every recovery (every
    `rescan_s`) it also moves the jobs of workers whose lease expired back into work/queue/, and sends
    again the task of every queued job that has none on record, or whose task is older than
    `visibility_timeout_s`."""

    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        super().__init__(as_queue(settings), once=once)
        self.enqueued = 0
        self._down: str | None = None  # why the broker could not be reached, while it cannot
        self._read_queue = False  # whether the jobs in work/queue/ have been read once

    def serve(self) -> int:
        code = super().serve()
        # `--once` with the broker away: the claimed jobs wait in work/queue/ for the next `run`.
        return EXIT_FAILED_JOBS if self.once and self._down is not None else code

    def startup(self) -> None:
        settings = self.settings
        prepare_folders(settings)
        try:
            self.lock = acquire_worker(settings)
        except StartupError as exc:
            raise StartupError(f"the queue folder {settings.worker_dir} is held by another `i2v-watcher run` "
                               f"in celery mode ({exc}): run one per work folder") from exc
        self.broker = Broker(settings)
        self.start_watching(Heartbeat(settings, self.cancel.liveness), coordination="celery",
                            broker=safe_url(settings.broker_url), queue=settings.celery_queue)

    def _run(self, job: Job) -> None:
        """A job just claimed (into work/queue/): its id goes on the queue. While the broker is away it
        waits there, and the next recovery sends it."""
        if self._down is None:
            self._send(job.id)

    def recover(self) -> None:
        self._take_over_stale_workers()  # into work/queue/, the takeover recorded in the job
        queued = self._queued()
        if queued is None:
            return
        try:
            sent = self.broker.sent()
            waiting = set(queued)
            self.broker.forget([job_id for job_id in sent if job_id not in waiting])
        except BROKER_ERRORS as exc:
            self._unavailable(exc)
            return
        now = time.time()
        lost = [j for j in queued if j not in sent]
        old = [j for j in queued if j in sent and now - sent[j] > self.settings.visibility_timeout_s]
        for job_id in lost + old:
            if self.cancel.stopping or not self._send(job_id):
                return
        if lost or old:
            log.info("queued jobs sent again", without_task=len(lost), older_than_visibility_timeout=len(old))

    def _queued(self) -> list[str] | None:
        """The ids of the jobs in work/queue/. The first time, every job is read (a claim a crash cut
        short is finished, or undone; a folder that cannot be read is reported and left alone); after
        that the names are enough: every job that enters work/queue/ later is complete, and a long
        queue on a share is not read in full every `rescan_s`. None when a stop cut it short."""
        if self._read_queue:
            with os.scandir(self.store.root) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)
                              and re.fullmatch(JOB_ID_PATTERN, e.name)
                              and os.path.lexists(os.path.join(e.path, STATE_FILE)))
        queued = []
        for job in self.store.leftovers():
            if self.cancel.stopping:
                return None
            if job.state.stage == "claiming":  # a claim cut short by a crash: finish it (or undo it)
                resumed = resume_claim(self.settings, job)
                if resumed is None:
                    continue
                job = resumed
            queued.append(job.id)
        self._read_queue = True
        return queued

    def _send(self, job_id: str) -> bool:
        try:
            self.broker.enqueue(job_id)
        except BROKER_ERRORS as exc:
            self._unavailable(exc)
            return False
        if self._down is not None:
            log.warning("broker is back: sending the queued jobs", broker=safe_url(self.settings.broker_url))
            self._down = None
            self._next_recover = time.monotonic()  # the rest of work/queue/ at the next tick
        self.enqueued += 1
        log.info("enqueued", job_id=job_id, queue=self.settings.celery_queue)
        return True

    def _unavailable(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if self._down is None:
            log.error("broker unavailable: claimed jobs wait in work/queue/ and are enqueued when it is back",
                      broker=safe_url(self.settings.broker_url), error=reason)
        self._down = reason
        self._next_recover = min(self._next_recover, time.monotonic() + BROKER_RETRY_S)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self.broker.close()


_active: QueueWorker | None = None  # the worker of this process, which the task runs in


class QueueWorker:
    """`i2v-watcher worker`: starts like the daemon (its own worker folder, lease and heartbeat; the
    resident backends loaded once), resumes what it left in its folder, then runs a Celery worker in
    this process (solo pool: one job at a time, in this process, the model resident) on the queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cancel = Cancel(stop_announcer(settings.stop_timeout_s))
        self.up = False
        self.published = 0
        self.failed = 0
        self._next_observe = 0.0

    def serve(self) -> int:
        stops = (signal.SIGTERM, signal.SIGINT)
        signals = {signum: signal.signal(signum, self._on_signal) for signum in stops}
        try:
            try:
                self.startup()
            except StartupInterrupted:
                log.warning("stopped during start-up")
                return 0
            try:
                self.resume_leftovers()
                if not self.cancel.stopping:
                    self.consume()
            finally:
                self.shutdown()
        finally:
            for signum, handler in signals.items():
                signal.signal(signum, handler)
        return 0

    def startup(self) -> None:
        settings = self.settings
        if settings.worker_id == QUEUE:
            raise StartupError(f"worker_id {QUEUE!r} names the queue folder work/{QUEUE}/: choose another")
        prepare_folders(settings)
        self.lock = acquire_worker(settings)
        binary, default, resident = load_backends(settings)
        self.store = WorkStore(settings)
        self.queue = WorkStore(as_queue(settings))
        self.observer = LeaseObserver(settings)
        first = resident[default]
        self.heartbeat = Heartbeat(settings, self.cancel.liveness, first.name, first.model_id)
        self.pipeline = Pipeline(settings, resident, binary, self.cancel, default)
        self.broker = Broker(settings)
        self.heartbeat.start()
        self.up = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Only flags, as in the daemon. The Celery loop stops at its next turn (within TICK_S when
        idle); a running job may finish within `stop_timeout_s`, and a second signal aborts it."""
        name = signal.Signals(signum).name
        self.cancel.request_stop(self.settings.stop_timeout_s, name)
        celery_state.should_stop = 0  # a warm shutdown: Celery's own flag, read by its loop
        if not self.up:
            raise StartupInterrupted(name)

    def resume_leftovers(self) -> None:
        """The jobs this worker left in its folder (killed, stopped), before it takes new ones."""
        for job in self.store.leftovers():
            if self.cancel.stopping:
                return
            log.info("resuming job", job_id=job.id, job=job.state.key, stage=job.state.stage)
            self._work(job)

    def consume(self) -> None:
        global _active
        settings = self.settings
        app = self.broker.app
        app.steps["consumer"].add(Tick)
        # Celery warns at every lost connection that it lets late-acknowledged tasks run on: intended.
        warnings.filterwarnings("ignore", category=CPendingDeprecationWarning)
        _active = self
        try:
            controller = app.WorkController(
                hostname=f"{settings.worker_id}@{socket.gethostname()}", pool_cls="solo", concurrency=1,
                queues=[settings.celery_queue], loglevel="WARNING", without_mingle=True,
                without_gossip=True, without_heartbeat=True)
            log.info("consuming", worker_id=settings.worker_id, broker=safe_url(settings.broker_url),
                     queue=settings.celery_queue, visibility_timeout_s=settings.visibility_timeout_s)
            controller.start()
        finally:
            _active = None
        if controller.exitcode:  # Celery gave up (it has logged why)
            raise RuntimeError(f"the Celery worker stopped with exit code {controller.exitcode}")

    def tick(self) -> None:
        """Every TICK_S while the Celery loop turns: the worker is alive (its heartbeat beats), a stop
        request is announced, and the other workers' heartbeats are watched, so that a task whose job
        sits with a dead worker finds that worker's lease already judged."""
        self.cancel.liveness.touch()
        self.cancel.announce_pending()
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
            self.cancel.liveness.touch()
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
        with os.scandir(self.settings.work) as entries:
            for entry in entries:
                if entry.name in (self.settings.worker_id, QUEUE) or entry.name.startswith(".") or \
                        not entry.is_dir(follow_symlinks=False):
                    continue
                if os.path.isdir(os.path.join(entry.path, job_id)):
                    return Path(entry.path)
        return None

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
            if counter() != first or self.cancel.stopping or time.monotonic() >= deadline:
                return False
            self.cancel.liveness.touch()  # waiting for another worker's lease is not being hung
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
        self.cancel.announce_pending()
        self.heartbeat.stop()
        self.lock.release()
        self.broker.close()
        log.info("stopped", published=self.published, failed=self.failed)


class Tick(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: QueueWorker.tick every TICK_S on the Celery loop's own timer. Started again
    after every reconnection to the broker (the consumer restarts its steps then)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        if _active is not None:
            self.tref = parent.timer.call_repeatedly(TICK_S, _active.tick)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
