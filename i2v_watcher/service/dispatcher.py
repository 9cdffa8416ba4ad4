"""Celery mode (`coordination = "celery"`): `run` watches the inbox and claims each settled job into
work/queue/, then puts the job id on a Redis queue; `worker` processes, one per GPU on any number of
hosts, each with its models loaded once, take the ids off the queue (celery_worker.py).

Exactly-once comes from the folders, not from the queue. A task carries only a job id. The worker that
gets it moves the job folder out of work/queue/ into its own work/<worker_id>/ with one rename: of two
workers handed the same id, one wins and the other finds nothing to do; and publishing reserves names
per job id, as in folder mode. So the queue may lose a task (Redis restarted without persistence) or
deliver one twice (a worker died and the visibility timeout passed): `run` sends again the task of any
job still in work/queue/ that has none on record, and a duplicate is a no-op.

Imported only in celery mode, so that the core install needs no celery.
"""

from __future__ import annotations

import os
import re
import time

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.state import JOB_ID_PATTERN, STATE_FILE, Job
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.broker import BROKER_ERRORS, Broker, as_queue, safe_url
from i2v_watcher.service.intake import Intake
from i2v_watcher.service.lifecycle import EXIT_FAILED_JOBS, EXIT_OK, Service
from i2v_watcher.service.loop import Loop
from i2v_watcher.service.parts import Beating, Part, Schedule
from i2v_watcher.service.recovery import take_over_stale_workers
from i2v_watcher.service.retention import Retention
from i2v_watcher.work.claim import resume_claim
from i2v_watcher.work.lease import Heartbeat, LeaseObserver
from i2v_watcher.work.store import WorkStore

BROKER_RETRY_S = 2.0  # while the broker is down, `run` tries again this often
log = structlog.get_logger("i2v_watcher.service.dispatcher")


class Enqueuer(Part):
    """The queue's part: a job just claimed into work/queue/ has its id sent. At every tick when due
    (every `rescan_s`, and at once when the broker is back) the jobs of workers whose lease expired are
    moved back into work/queue/, and the task of every queued job that has none on record, or whose
    task is older than `visibility_timeout_s`, is sent again. While the broker is away jobs wait in
    work/queue/."""

    def __init__(self, settings: Settings, store: WorkStore, checkpoint: Checkpoint, broker: Broker) -> None:
        self.settings = settings
        self.store = store
        self.checkpoint = checkpoint
        self.broker = broker
        self.observer = LeaseObserver(settings)
        self.enqueued = 0
        self.down: str | None = None  # why the broker could not be reached, while it cannot
        self._read_queue = False  # whether the jobs in work/queue/ have been read once
        self.schedule = Schedule(settings.rescan_s)

    def claimed(self, job: Job) -> None:
        """The intake's sink. While the broker is away the job waits, and a later tick sends it."""
        if self.down is None:
            self.send(job.id)

    def next_at(self) -> float:
        return self.schedule.at

    def tick(self) -> None:
        if self.schedule.due():
            self.recover()

    def recover(self) -> None:
        take_over_stale_workers(self.observer, self.store, self.checkpoint)  # into work/queue/
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
            if self.checkpoint.stopping or not self.send(job_id):
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

    def send(self, job_id: str) -> bool:
        try:
            queue = self.broker.enqueue(job_id)
        except BROKER_ERRORS as exc:
            self._unavailable(exc)
            return False
        if self.down is not None:
            log.warning("broker is back: sending the queued jobs", broker=safe_url(self.settings.broker_url))
            self.down = None
            self.schedule.sooner()  # the rest of work/queue/ at the next tick
        self.enqueued += 1
        log.info("enqueued", job_id=job_id, queue=queue)
        return True

    def _unavailable(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if self.down is None:
            log.error("broker unavailable: claimed jobs wait in work/queue/ and are enqueued when it is back",
                      broker=safe_url(self.settings.broker_url), error=reason)
        self.down = reason
        self.schedule.sooner(BROKER_RETRY_S)


class Dispatcher(Service):
    """`run` in celery mode: the intake claims jobs into work/queue/ and the enqueuer sends their ids;
    it never generates."""

    # It runs no job: the queue is measured by the web process, the jobs by the workers' own metrics
    # (which share its config on a host, metrics_port included).
    serves_metrics = False

    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        super().__init__(as_queue(settings))
        self.once = once

    def startup(self) -> None:
        settings = self.settings
        prepare_folders(settings)
        try:
            self.acquire_worker()
        except StartupError as exc:
            raise StartupError(f"the queue folder {settings.worker_dir} is held by another `i2v-watcher run` "
                               f"in celery mode ({exc}): run one per work folder") from exc
        self.notifier.about = {"backend": f"dispatching to the Celery queue {settings.celery_queue}"}
        store = WorkStore(settings)
        broker = Broker(settings)
        self.enqueuer = Enqueuer(settings, store, self.checkpoint, broker)
        self.intake = Intake(settings, store, self.checkpoint.activity, self.enqueuer.claimed, gate=self.gate)
        heartbeat = Heartbeat(settings, self.checkpoint.activity)
        self.compose([Retention(settings), broker, Beating(heartbeat), self.enqueuer, self.intake])
        self.intake.announce(once=self.once, coordination="celery", broker=safe_url(settings.broker_url),
                             queue=settings.celery_queue)

    def work(self) -> None:
        Loop(self.checkpoint, self.parts, self.intake, once=self.once).run()

    def exit_code(self) -> int:
        # `--once` with the broker away: the claimed jobs wait in work/queue/ for the next `run`.
        unfinished = self.enqueuer.down is not None or self.intake.blocked()
        return EXIT_FAILED_JOBS if self.once and unfinished else EXIT_OK
