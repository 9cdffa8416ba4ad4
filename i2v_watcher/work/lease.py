"""Worker leases on the shared work folder, without comparing clocks across hosts.

Each daemon writes work/<worker_id>/heartbeat.json (job.records.HeartbeatRecord) with an increasing
counter, from a thread, but only while its activity checkpoint is fresh (the loop ticks, a job reports
progress): a slow job keeps it beating, a hung or frozen (SIGSTOP) daemon stops it. Another daemon
measures for how long the counter has not moved on its *own* monotonic clock, asks the one judge
(work.liveness) what that makes the worker, and takes its jobs over only when it is stale or stopped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from i2v_watcher import __version__
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.fs.atomic import write_json_atomic
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.state import utc_now
from i2v_watcher.job.worker_records import BeatJob, HeartbeatRecord
from i2v_watcher.work.liveness import TAKE_OVER, judge, thresholds
from i2v_watcher.work.liveness import heartbeat_interval as heartbeat_interval  # its users import it here

HEARTBEAT_FILE = "heartbeat.json"
LOCK_FILE = ".lock"
QUEUE = "queue"  # work/queue/: jobs waiting for a worker (Celery mode); not a worker
log = structlog.get_logger("i2v_watcher.work.lease")


def read_beat(folder: Path) -> HeartbeatRecord | None:
    """A worker's heartbeat, or None when it cannot be read or holds no JSON object (read_json reads a
    stale NFS handle once more)."""
    try:
        return HeartbeatRecord.read(folder / HEARTBEAT_FILE, 64 * 1024, lenient=True)
    except (OSError, ValueError):
        return None


def read_heartbeat(folder: Path) -> dict[str, object] | None:
    """The heartbeat as its file says it (the keys it has), or None."""
    beat = read_beat(folder)
    return None if beat is None else beat.as_file()


class Heartbeat:
    def __init__(self, settings: Settings, activity: Activity, backend: str = "", model: str = "",
                 backends: list[str] | None = None, swap_backends: list[str] | None = None) -> None:
        self.settings = settings
        self.activity = activity
        self.path = settings.worker_dir / HEARTBEAT_FILE
        self.counter = 0
        self.started_at = utc_now()
        # `backends`: every backend a worker that runs jobs loaded, which routes jobs to it (work.routing).
        self.about: dict[str, Any] = {
            "backend": backend, "model": model, "auto_backend": settings.auto_backend,
            "backends": ([backend] if backend else []) if backends is None else backends}
        # A key of its own, only where it is set (see HeartbeatRecord).
        self.extra: dict[str, Any] = {"swap_backends": swap_backends} if swap_backends else {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(heartbeat_interval(self.settings)):
            if self.activity.fresh(self.settings.max_silent_s):
                with contextlib.suppress(OSError):  # a share that hiccups: the next beat will do
                    self.beat()

    def beat(self, state: str = "running") -> None:
        self.counter += 1
        busy = self.activity.busy()
        live = busy[0] if busy else self.activity  # the job furthest behind: the one generating
        record = HeartbeatRecord(
            worker_id=self.settings.worker_id, host=socket.gethostname(), pid=os.getpid(),
            counter=self.counter, state=state, started_at=self.started_at, beat_at=utc_now(),
            interval_s=heartbeat_interval(self.settings), version=__version__, **self.about,
            job_id=live.job_id, job=live.job, stage=live.stage, done=live.done, total=live.total,
            published=self.activity.published, failed=self.activity.failed,
            jobs=[BeatJob(job_id=b.job_id, job=b.job, stage=b.stage, done=b.done, total=b.total)
                  for b in busy], paused=self.activity.paused or None, **self.extra)
        write_json_atomic(self.path, record.model_dump(mode="json"))

    def stop(self) -> None:
        """Say so on the share: a stopped worker's jobs may be taken over at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.beat("stopped")


def worker_folders(settings: Settings, *, besides: str | None = None) -> list[Path]:
    """The worker folders under work/ (not the queue, nothing hidden, never through a link), in name
    order, except `besides`."""
    with os.scandir(settings.work) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)
                      and e.name not in (QUEUE, besides) and not e.name.startswith("."))


class LeaseObserver:
    """Which other workers' jobs may be taken over: those the judge finds stale or stopped, by how long
    their counter has stood still on this process's monotonic clock (watched since it first saw it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._seen: dict[str, tuple[object, float]] = {}  # worker id → (counter, since when unchanged)

    def stale_workers(self) -> list[Path]:
        folders = worker_folders(self.settings, besides=self.settings.worker_id)
        stale = [folder for folder in folders if self.judge(folder) in TAKE_OVER]
        present = {folder.name for folder in folders}
        self._seen = {k: v for k, v in self._seen.items() if k in present}
        return stale

    def judge(self, folder: Path) -> str:
        """The worker's liveness by the counter's age on this clock: 0 when it moved since last time."""
        now = time.monotonic()
        beat = read_beat(folder)
        counter = None if beat is None else (beat.counter, beat.started_at)
        seen = self._seen.get(folder.name)
        if seen is None or seen[0] != counter:
            seen = self._seen[folder.name] = (counter, now)
        return judge(beat, now - seen[1], thresholds(beat, self.settings))


def check_lease_free(settings: Settings) -> None:
    """Refuse to start under a worker_id that a live daemon on another host holds (two daemons in one
    worker folder would resume each other's jobs): watch its counter for lease_timeout_s, on this
    clock. (On this host the flock already said.)"""
    beat = read_beat(settings.worker_dir)
    if beat is None or beat.state == "stopped":
        return
    if beat.host == socket.gethostname():
        return  # on this host the flock (held) is the truth
    log.warning("another host wrote this worker's heartbeat: watching whether it is alive",
                worker_id=settings.worker_id, host=beat.host, seconds=settings.lease_timeout_s)
    deadline = time.monotonic() + settings.lease_timeout_s
    while time.monotonic() < deadline:
        time.sleep(min(1.0, heartbeat_interval(settings)))
        again = read_beat(settings.worker_dir)
        if again is not None and again.counter != beat.counter:
            raise StartupError(
                f"worker_id {settings.worker_id!r} is held by a live daemon on host {again.host}: "
                "give each daemon its own worker_id")


class WorkerLock:
    """This process's hold on its worker folder: an flock on work/<worker_id>/.lock, kept open for
    the daemon's life (released by the kernel when it dies, also on NFSv4, where it is a lease of the
    server's). Two daemons on one host can never share a worker folder, even when started at once."""

    def __init__(self, fd: int, worker_id: str, folder: Path) -> None:
        self.fd = fd
        self.worker_id = worker_id
        self.folder = folder

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def abandon(self) -> None:
        """A start that failed: this worker never ran, so a folder that holds nothing but its lock is
        removed (no ghost worker in `status`, the dashboard and `i2v_worker_up`); one with a heartbeat
        or jobs in it is left as it is. The lock is held until the folder is gone: a daemon that opened
        the old lock file meanwhile sees that it is no longer there and makes a new one (_try_lock)."""
        try:
            with os.scandir(self.folder) as entries:
                if {entry.name for entry in entries} <= {LOCK_FILE}:
                    os.unlink(self.folder / LOCK_FILE)
                    os.rmdir(self.folder)
        except OSError:
            pass  # left as it is: readers judge it (work.survey)
        finally:
            self.release()


def _try_lock(folder: Path) -> int | None:
    """The flock on folder/.lock, or None while another process here holds it. A lock file removed
    between its open and its flock (a start that failed, WorkerLock.abandon) is made anew; one
    removed again at each try is someone else's folder to leave alone."""
    for _ in range(10):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        if _still_there(folder / LOCK_FILE, fd):
            return fd
        os.close(fd)
    return None


def _still_there(path: Path, fd: int) -> bool:
    try:
        named, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def acquire_worker(settings: Settings) -> WorkerLock:
    """Take this daemon's worker folder. An explicit worker_id that a live daemon holds is refused
    (exit 2); the default one is unique per daemon on a host: the host name, plus the GPU it runs on,
    plus `-2`, `-3`… while a live daemon here holds the id before it."""
    explicit = "worker_id" in settings.model_fields_set
    base = settings.worker_id
    device = settings.diffusion.device
    if not explicit and device.startswith("cuda:"):
        base = f"{base}-gpu{device.split(':', 1)[1]}"
    candidates = [base] if explicit else [base] + [f"{base}-{n}" for n in range(2, 100)]
    for candidate in candidates:
        fd = _try_lock(settings.work / candidate)
        if fd is None:
            continue
        settings.worker_id = candidate
        try:
            check_lease_free(settings)
        except BaseException:
            os.close(fd)
            raise
        return WorkerLock(fd, candidate, settings.work / candidate)
    raise StartupError(
        f"worker_id {base!r} is held by a live daemon on this host: two daemons must not share a worker "
        "folder; give each its own worker_id (or leave it unset)")
