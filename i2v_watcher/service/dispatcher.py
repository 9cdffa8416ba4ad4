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
import time
from collections.abc import Callable

import redis
import structlog
from celery import Celery
from kombu.exceptions import KombuError
from kombu.utils.url import maybe_sanitize_url

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.state import JOB_ID_PATTERN, STATE_FILE, Job
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.daemon import EXIT_FAILED_JOBS, Daemon
from i2v_watcher.work.claim import resume_claim
from i2v_watcher.work.lease import QUEUE, Heartbeat

TASK = "i2v_watcher.process_job"
BROKER_ERRORS = (KombuError, redis.RedisError, OSError)
BROKER_RETRY_S = 2.0  # while the broker is down, `run` tries again this often
# A send that cannot reach the broker gives up after about 1.5 s; the job waits in work/queue/.
SEND_RETRY = {"max_retries": 2, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
log = structlog.get_logger("i2v_watcher.service.dispatcher")


def as_queue(settings: Settings) -> Settings:
    """The settings of the queue folder: work/queue/ is a worker named "queue", whose lease the one
    `run` of a celery deployment holds, and which no worker ever judges stale."""
    return settings.model_copy(update={"worker_id": QUEUE})


def safe_url(url: str | None) -> str:
    return str(maybe_sanitize_url(url or ""))


def make_app(settings: Settings, process: Callable[[str], str] | None = None) -> Celery:
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
    if process is not None:  # a worker runs the task; `run` only sends it, by name
        app.task(name=TASK, ignore_result=True)(process)
    return app


class Broker:
    """The Redis side: sending a job's task, and the record of when each queued job's task was last
    sent (a hash in the same Redis). A task is always sent before it is recorded: a crash in between
    leaves a task without a record (sent again, harmless), never a record without a task. A Redis
    that restarts empty loses both, and `run` sends again every job in work/queue/."""

    def __init__(self, settings: Settings, process: Callable[[str], str] | None = None) -> None:
        assert settings.broker_url is not None  # the settings' own check in celery mode
        self.settings = settings
        self.app = make_app(settings, process)
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

    # It runs no job: the queue is measured by the web process, the jobs by the workers' own metrics
    # (which share its config on a host, metrics_port included).
    serves_metrics = False

    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        super().__init__(as_queue(settings), once=once)
        self.enqueued = 0
        self._down: str | None = None  # why the broker could not be reached, while it cannot
        self._read_queue = False  # whether the jobs in work/queue/ have been read once

    def exit_code(self) -> int:
        # `--once` with the broker away: the claimed jobs wait in work/queue/ for the next `run`.
        return EXIT_FAILED_JOBS if self.once and self._down is not None else super().exit_code()

    def startup(self) -> None:
        settings = self.settings
        prepare_folders(settings)
        try:
            self.lock = self.acquire_worker()
        except StartupError as exc:
            raise StartupError(f"the queue folder {settings.worker_dir} is held by another `i2v-watcher run` "
                               f"in celery mode ({exc}): run one per work folder") from exc
        self.broker = Broker(settings)
        self.notifier.about = {"backend": f"dispatching to the Celery queue {settings.celery_queue}"}
        self.start_watching(Heartbeat(settings, self.checkpoint.activity), coordination="celery",
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
            if self.checkpoint.stopping or not self._send(job_id):
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
            if self.checkpoint.stopping:
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
