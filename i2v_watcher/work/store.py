"""The work store: the one owner of work/<worker_id>/. It makes job folders, lists the jobs left there
for recovery, keeps the trash clean, and knows which jobs this process is working on, so that a
periodic recovery never resumes a job that is in flight."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import structlog
from pydantic import ValidationError

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings
from i2v_watcher.faults import crashpoint
from i2v_watcher.fs.atomic import rename_noreplace, write_durably
from i2v_watcher.job.state import STATE_FILE, TRASH_PREFIX, Job, JobState, utc_now

log = structlog.get_logger("i2v_watcher.work.store")


class WorkStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.worker_dir
        self.worker_id = settings.worker_id
        self.in_flight: set[str] = set()
        self._broken: dict[str, str] = {}  # folder name → the problem already logged

    def create(self, state: JobState) -> Job:
        folder = self.root / state.job_id
        (folder / "input").mkdir(parents=True)
        job = Job(folder, state)
        job.save()  # before the first input moves: a crash half-way is finished (or undone) on restart
        return job

    def leftovers(self) -> list[Job]:
        """The jobs on disk that no one here is working on, in job-id (claim) order. Finished jobs'
        trash is removed; a folder that cannot be understood is reported once and left alone."""
        found = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            folder = Path(entry.path)
            if not entry.is_dir(follow_symlinks=False) or entry.name in self.in_flight:
                continue
            if entry.name.startswith(TRASH_PREFIX):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            job = self._load(folder)
            if job is not None:
                found.append(job)
        return found

    def take(self, folder: Path, reason: str) -> Job | None:
        """Take a job folder from another worker's folder (a stale one, or the Celery queue) into
        ours with one rename: of several workers trying at once, one wins; None for the others. The
        takeover is recorded in the job, and the job is then resumed from the stage it reached."""
        target = self.root / folder.name
        try:
            rename_noreplace(folder, target)
        except OSError as exc:
            # A retransmitted RENAME on NFS answers ENOENT after it succeeded: look in our own folder.
            if not (exc.errno in (errno.ENOENT, errno.ESTALE) and target.is_dir()):
                return None  # another worker won, or the folder went away
        job = self._load(target)
        if job is None:
            return None
        if reason != "queue":
            job.advance(job.state.stage, worker_id=self.worker_id, takeovers=[
                *job.state.takeovers, {"from": job.state.worker_id, "at": utc_now(),
                                       "stage": job.state.stage, "reason": reason}])
            log.warning("took over a job", job_id=job.id, job=job.state.key, previous=folder.parent.name,
                        stage=job.state.stage, reason=reason)
            events.append(self.settings, "takeover", job_id=job.id, name=job.state.key,
                          previous=folder.parent.name, stage=job.state.stage, reason=reason)
        else:
            job.advance(job.state.stage, worker_id=self.worker_id)
        return job

    def _load(self, folder: Path) -> Job | None:
        if not os.path.lexists(folder / STATE_FILE):
            # A crash right after the folder was made: the state is written before any input moves.
            inputs = folder / "input"
            if inputs.is_dir() and any(inputs.iterdir()):
                self._report(folder, "job folder without a state file")
            else:
                shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            return Job.load(folder)
        except (OSError, ValueError, ValidationError) as exc:
            self._report(folder, f"unreadable state file: {type(exc).__name__}: {exc}")
            return None

    def _report(self, folder: Path, problem: str) -> None:
        if self._broken.get(folder.name) != problem:
            self._broken[folder.name] = problem
            log.error("job folder left alone: fix or remove it by hand", folder=str(folder), problem=problem)


class Scratch:
    """Resume copies of generated frames on a local disk (the `scratch` setting), one per job in
    flight. Frames go from the GPU to ffmpeg in memory; the copy is written meanwhile by a thread of
    its own, so neither stage waits for it, and it lets a job stopped or crashed after generation
    resume without generating again. It is durable once it exists (written to a temporary name,
    fsynced, renamed): after a host crash it is whole or absent, and absent means "generate again"."""

    SUFFIX = ".frames.npy"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writers: dict[str, threading.Thread] = {}

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}{self.SUFFIX}"

    def keep(self, job_id: str, pixels: np.ndarray) -> None:
        """Start writing the copy; returns at once."""
        writer = threading.Thread(target=contextvars.copy_context().run, args=(self._write, job_id, pixels),
                                  name=f"scratch-{job_id}", daemon=True)
        self._writers[job_id] = writer
        writer.start()

    def _write(self, job_id: str, pixels: np.ndarray) -> None:
        target = self.path(job_id)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_durably(target, lambda handle: np.save(handle, pixels))
        except OSError as exc:  # a full local disk: the job goes on; only its resume copy is missing
            log.warning("cannot keep a resume copy of the frames", job_id=job_id, path=str(target),
                        error=str(exc))
            return
        crashpoint("pipeline.after_scratch")

    def load(self, job_id: str) -> np.ndarray | None:
        """The frames, or None when there is no whole copy (never written, lost with a host crash)."""
        self.wait(job_id)
        try:
            pixels: np.ndarray = np.load(self.path(job_id), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return pixels

    def wait(self, job_id: str) -> None:
        writer = self._writers.pop(job_id, None)
        if writer is not None:
            writer.join()

    def drop(self, job_id: str) -> None:
        self.wait(job_id)
        with contextlib.suppress(FileNotFoundError):
            self.path(job_id).unlink()

    def prune(self, keep: set[str]) -> None:
        """Remove the copies of jobs no longer in this worker's folder (published or taken over while
        this process was down), and half-written ones."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.removesuffix(self.SUFFIX) not in keep or not entry.name.endswith(self.SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
