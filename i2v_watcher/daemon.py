"""The daemon's life: startup(), main_loop(), shutdown(). Signal handlers only set flags; the loop
ticks, and nothing in it blocks for long, so a stop is always prompt."""

from __future__ import annotations

import shutil
import signal
import time
from types import FrameType

import structlog

from i2v_watcher import backends
from i2v_watcher.cancel import Cancel
from i2v_watcher.claim import claim, resume_claim
from i2v_watcher.config import Settings
from i2v_watcher.errors import InboxUnavailable, StartupError
from i2v_watcher.ffmpeg import find_ffmpeg
from i2v_watcher.fsutil import same_filesystem
from i2v_watcher.job import STATE_FILE, TRASH_PREFIX, Job
from i2v_watcher.pipeline import Pipeline
from i2v_watcher.postprocess import check_presets
from i2v_watcher.retention import prune
from i2v_watcher.watch import Inbox, Scan, Watcher

EXIT_OK, EXIT_FAILED_JOBS = 0, 3
TICK_S = 0.5
RETENTION_EVERY_S = 3600.0
log = structlog.get_logger("i2v_watcher.daemon")


def prepare_folders(settings: Settings) -> None:
    if not settings.inbox.is_dir():
        if not settings.create_inbox:
            raise StartupError(
                f"the inbox {settings.inbox} does not exist. If it is a network share, mount it first; "
                "to create a local folder instead, set create_inbox = true")
        settings.inbox.mkdir(parents=True, exist_ok=True)
    for name, path in settings.folders().items():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the {name} folder {path}: {exc}") from exc
    settings.worker_dir.mkdir(exist_ok=True)
    if not same_filesystem(settings.inbox, settings.worker_dir):
        raise StartupError(
            f"the work folder {settings.work} is not on the same filesystem as the inbox {settings.inbox}: "
            "jobs are claimed by an atomic rename, which needs both on one filesystem (put work on the "
            "inbox's share, e.g. next to it)")


def choose_backend(settings: Settings) -> str:
    """`backend = "auto"`: the configured diffusion backend where CUDA and its weights are there, else
    the preview, said loudly. Any explicitly named backend is loaded as configured, or fails start-up."""
    if settings.backend != "auto":
        return settings.backend
    candidate = backends.get(settings.auto_backend)(settings)
    reason = candidate.unavailable()
    if reason is None:
        log.info("backend = auto: using the diffusion backend", backend=candidate.name,
                 model=candidate.model_id)
        return candidate.name
    log.warning("backend = auto: FALLING BACK TO THE PREVIEW BACKEND, no diffusion model will run",
                wanted=candidate.name, reason=reason)
    return "preview"


class Daemon:
    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        self.cancel = Cancel()
        self.failed = 0
        self.published = 0

    def serve(self) -> int:
        self.startup()
        try:
            self.main_loop()
        finally:
            self.shutdown()
        # Only a batch run reports failed jobs in its exit code; a service stopped by a signal exits 0.
        return EXIT_FAILED_JOBS if self.once and self.failed else EXIT_OK

    def startup(self) -> None:
        settings = self.settings
        prepare_folders(settings)
        binary, origin = find_ffmpeg(settings.ffmpeg_path)
        log.info("ffmpeg found", path=binary.path, origin=origin, version=binary.version)
        for note in check_presets(settings, binary):
            log.info("ffmpeg hardware encoder", result=note)
        # Signals only set flags; installed before the (possibly long) model load, so a stop then is
        # orderly too: the loop is never entered.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        backends.discover(settings.plugins)
        default = choose_backend(settings)
        resident: dict[str, backends.Backend] = {}
        for name in dict.fromkeys(default if n == "auto" else n for n in settings.resident):
            backend = backends.get(name)(settings)
            started = time.monotonic()
            backend.load()
            log.info("backend loaded", backend=name, model=backend.model_id,
                     seconds=round(time.monotonic() - started, 2))
            resident[name] = backend
        self.pipeline = Pipeline(settings, resident, binary, self.cancel, default)
        self.inbox = Inbox(settings)
        self.watcher = Watcher(settings)
        self.recover()
        prune(settings)
        self.watcher.start()
        self.paused = False
        self._last_full = self._last_scan = self._last_prune = self._last_recover = time.monotonic()
        self._scan: Scan | None = None
        log.info("watching", inbox=str(settings.inbox), outbox=str(settings.outbox),
                 worker_id=settings.worker_id, once=self.once)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = not self.cancel.stopping
        self.cancel.request_stop(self.settings.stop_timeout_s)
        log.warning("stop requested" if first else "second signal: aborting now",
                    signal=signal.Signals(signum).name, stop_timeout_s=self.settings.stop_timeout_s)
        if hasattr(self, "watcher"):
            self.watcher.changed.set()

    def recover(self) -> None:
        """Resume every job this worker left in its work folder (a crash, or a failed clean-up)."""
        for folder in sorted(self.settings.worker_dir.iterdir()):
            if self.cancel.stopping:
                return
            if folder.name.startswith(TRASH_PREFIX):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if not (folder / STATE_FILE).is_file():
                # A crash right after the folder was made: the state is written before any input moves.
                inputs = folder / "input"
                if inputs.is_dir() and any(inputs.iterdir()):
                    log.error("job folder without a state file; left alone", folder=str(folder))
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            found = Job.load(folder)
            log.info("resuming job", job_id=found.id, job=found.state.key, stage=found.state.stage)
            job = resume_claim(self.settings, found) if found.state.stage == "claiming" else found
            if job is not None:
                self._run(job)

    def _run(self, job: Job) -> None:
        try:
            outcome = self.pipeline.run(job)
        except Exception:
            log.exception("job left in the work folder, will retry", job_id=job.id)
            return
        self.failed += outcome == "failed"
        self.published += outcome == "published"

    def main_loop(self) -> None:
        while not self.cancel.stopping:
            if not self.tick():
                break

    def tick(self) -> bool:
        """One turn of the loop; False when `--once` has drained the inbox."""
        now = time.monotonic()
        if now - self._last_recover >= self.settings.rescan_s:
            self._last_recover = now
            self.recover()  # jobs left behind by an error, e.g. a failed/ folder that was unwritable
        if now - self._last_prune >= RETENTION_EVERY_S:
            self._last_prune = now
            prune(self.settings)
        if self.paused:
            return self._wait_for_inbox()
        if self._scan_due(now):
            try:
                self._scan = self.inbox.scan()
            except InboxUnavailable as exc:
                self._pause(str(exc))
                return True
            self._last_scan = now
        scan = self._scan
        if scan and scan.ready:
            candidate = scan.ready.pop(0)
            self._scan = None  # rescan after every job: the folder may have changed meanwhile
            try:
                job = claim(self.settings, candidate)
            except InboxUnavailable as exc:
                self._pause(str(exc))
                return True
            if job is not None:
                self._run(job)
            return True
        if self.once and scan is not None and scan.waiting == 0 and scan.orphans == 0:
            return False  # drained; a lone sidecar is waited for (orphan_sidecar_s), then reported
        self.watcher.changed.wait(TICK_S)
        return True

    def _scan_due(self, now: float) -> bool:
        if self._scan is None or self.watcher.changed.is_set():
            self.watcher.changed.clear()
            self._last_full = now
            return True
        if now - self._last_full >= self.settings.rescan_s:
            self._last_full = now
            return True
        recheck = max(0.1, min(1.0, self.settings.settle_s / 2))
        return self._scan.waiting > 0 and now - self._last_scan >= recheck

    def _pause(self, reason: str) -> None:
        log.error("inbox unavailable: paused until it is back", reason=reason)
        self.paused = True
        self._scan = None
        self.watcher.stop()

    def _wait_for_inbox(self) -> bool:
        try:
            self.inbox.check_available()
        except InboxUnavailable:
            self.watcher.changed.wait(min(5.0, self.settings.rescan_s))
            return True
        log.warning("inbox is back: resuming", inbox=str(self.settings.inbox))
        self.paused = False
        self.watcher.start()
        return True

    def shutdown(self) -> None:
        self.watcher.stop()
        log.info("stopped", published=self.published, failed=self.failed)
