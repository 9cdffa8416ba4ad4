"""Celery mode's queue: the Celery app (tasks that carry only a job id, acknowledged late, one at a time
per worker) and the Redis side of it (sending a job's task, and the record of when each queued job's
task was last sent). Why a lost or repeated task is harmless: see dispatcher.py.

Imported only in celery mode, so that the core install needs no celery.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import KombuError
from kombu.utils.url import maybe_sanitize_url

from i2v_watcher.config.settings import Settings
from i2v_watcher.service.parts import Part
from i2v_watcher.work.lease import QUEUE
from i2v_watcher.work.routing import QueueRoutes

TASK = "i2v_watcher.process_job"
BROKER_ERRORS = (KombuError, redis.RedisError, OSError)
# A send that cannot reach the broker gives up after about 1.5 s; the job waits in work/queue/.
SEND_RETRY = {"max_retries": 2, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
# How long the task of a job cancelled while queued is known as such: its worker says so rather than
# "not found"; a task that waits longer (no worker for a week) is still a no-op, only said less well.
CANCELLED_TTL_S = 7 * 24 * 3600
CANCEL_TIMEOUT_S = 2.0  # `cancel` does not wait long for a broker that is away: the folders decide


def as_queue(settings: Settings) -> Settings:
    """The settings of the queue folder: work/queue/ is a worker named "queue", whose lease the one
    `run` of a celery deployment holds, and which no worker ever judges stale."""
    return settings.model_copy(update={"worker_id": QUEUE})


def safe_url(url: str | None) -> str:
    return str(maybe_sanitize_url(url or ""))


def make_app(settings: Settings, process: Callable[[str], str] | None = None) -> Celery:
    """The Celery app: a task acknowledged only once its job is safely in the worker's own folder and
    past generation (celery_worker.py), redelivered when its worker dies before that (after
    `visibility_timeout_s`), one at a time per worker, JSON only, no result backend."""
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


def cancelled_key(settings: Settings, job_id: str) -> str:
    return f"i2v-watcher:{settings.celery_queue}:cancelled:{job_id}"


def note_cancel(settings: Settings, job_id: str, said: str) -> None:
    """Before `cancel` takes a queued job out of work/queue/: its task, still in the broker, is then
    known as a cancelled job's (Broker.cancelled). Best-effort: the folder, not this note, makes the
    task a no-op, so a broker that cannot be reached costs only the worker's words."""
    assert settings.broker_url is not None
    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=CANCEL_TIMEOUT_S,
                                  socket_timeout=CANCEL_TIMEOUT_S)
    try:
        with contextlib.suppress(*BROKER_ERRORS):
            client.set(cancelled_key(settings, job_id), said, ex=CANCELLED_TTL_S)
    finally:
        with contextlib.suppress(*BROKER_ERRORS):
            client.close()


class Broker(Part):
    """The Redis side: sending a job's task, and the record of when each queued job's task was last
    sent (a hash in the same Redis). A task is always sent before it is recorded: a crash in between
    leaves a task without a record (sent again, harmless), never a record without a task. A Redis
    that restarts empty loses both, and `run` sends again every job in work/queue/."""

    def __init__(self, settings: Settings, process: Callable[[str], str] | None = None) -> None:
        assert settings.broker_url is not None  # the settings' own check in celery mode
        self.settings = settings
        self.app = make_app(settings, process)
        self.routes = QueueRoutes(settings)
        self.key = f"i2v-watcher:{settings.celery_queue}:enqueued"
        self.redis = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=5, socket_timeout=30)

    def enqueue(self, job_id: str, countdown: float | None = None) -> str:
        """Send the job's task, on the queue of its backend (work.routing.QueueRoutes); that queue."""
        queue = self.routes.queue(job_id)
        self.app.send_task(TASK, args=[job_id], queue=queue, countdown=countdown,
                           retry=True, retry_policy=SEND_RETRY)
        self.redis.hset(self.key, job_id, repr(time.time()))
        return queue

    def sent(self) -> dict[str, float]:
        """Job id → when its task was last sent (this Redis's record, in `time.time()` seconds)."""
        found: dict[str, float] = {}
        for key, value in self.redis.hgetall(self.key).items():
            with contextlib.suppress(ValueError):
                found[key.decode() if isinstance(key, bytes) else key] = float(value)
        return found

    def cancelled(self, job_id: str) -> str | None:
        """Who cancelled this job while it was queued, in words (note_cancel); None when not known."""
        with contextlib.suppress(*BROKER_ERRORS):
            said = self.redis.get(cancelled_key(self.settings, job_id))
            if said is not None:
                return said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        return None

    def forget(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.hdel(self.key, *job_ids)

    def stop(self) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(*BROKER_ERRORS):
            self.redis.close()
        with contextlib.suppress(*BROKER_ERRORS):
            self.app.close()
