"""Claim: take a job out of the inbox with atomic renames into work/<worker_id>/<job_id>/input/.

The job's state is written before the first rename, so a crash between two renames is finished (or
undone) on restart. Only one of several workers can win a rename, which is what lets several
processes share one inbox. A rename never replaces a name that exists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.faults import crashpoint
from i2v_watcher.fs.atomic import fsync_dir, rename_noreplace, safe_subdir
from i2v_watcher.inbox.watch import Candidate
from i2v_watcher.job.state import Job, JobState, new_job_id
from i2v_watcher.work.store import WorkStore

log = structlog.get_logger("i2v_watcher.work.claim")
_GONE = (errno.ENOENT, errno.ESTALE, errno.ENOTCONN, errno.EIO)


class ClaimRefused(Exception):
    """The inbox refused to give the job's files up (a folder the daemon may not write, a read-only
    file system): that job's problem, which an operator fixes. Nothing was taken."""

    def __init__(self, error: OSError, path: os.PathLike[str] | None = None) -> None:
        # Name the file in the inbox, not the rename's target in a new job folder: the message must be
        # the same at every try, or the refusal would be logged again at every rescan.
        super().__init__(f"{error.strerror or error}: {path or error.filename or ''}".rstrip(": "))
        self.error = error


def claim(settings: Settings, store: WorkStore, candidate: Candidate, *,
          leave_specials: bool = False, before: Callable[[Job], None] | None = None) -> Job | None:
    """Claim the candidate's files; None when another process took them first. With `leave_specials`
    (failed/ lies on another filesystem, where a link or special file could only be copied by opening
    it) those files stay in the inbox and the report will name them. `before`: done to the job's folder
    before its first file moves (a cancel's marker, which then holds whoever finishes the claim)."""
    files = candidate.files
    left = [p.name for p in files if _special(p)] if leave_specials and candidate.problem else []
    job = store.create(JobState(
        job_id=new_job_id(), worker_id=settings.worker_id, stage="claiming", key=candidate.key,
        inputs=[p.name for p in files if p.name not in left],
        image=candidate.image.name if candidate.image else None,
        sidecar=candidate.sidecar.name if candidate.sidecar else None,
        problem=candidate.problem, mtime=candidate.mtime, left_in_place=left,
    ))
    if before is not None:
        before(job)
    crashpoint("claim.before_rename")
    return _finish_claim(settings, job)


def _special(path: os.PathLike[str]) -> bool:
    try:
        return not stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _finish_claim(settings: Settings, job: Job) -> Job | None:
    source_dir = settings.inbox / job.rel_dir
    taken: list[str] = []
    for name in job.state.inputs:
        target = job.input(name)
        if os.path.lexists(target):
            _drop_second_name(source_dir / name, target)
            taken.append(name)
            continue
        try:
            rename_noreplace(source_dir / name, target)
        except OSError as exc:
            if exc.errno in _GONE and os.path.lexists(target):
                taken.append(name)  # a retransmitted rename on NFS reports ENOENT after it succeeded
                continue
            if exc.errno not in _GONE:
                _give_back(settings, job, taken)
                raise ClaimRefused(exc, source_dir / name) from exc
            if not taken:  # the main file is gone: someone else has it, or the share went away
                job.remove()
                if exc.errno != errno.ENOENT:
                    raise InboxUnavailable(str(exc)) from exc
                return None
            continue  # a sidecar that vanished meanwhile: the job goes on without it
        if not os.path.lexists(target):  # re-read what was claimed: a share can answer before it holds
            raise InboxUnavailable(f"{target} is not there after its rename was answered")
        taken.append(name)
        crashpoint("claim.after_rename")
    fsync_dir(job.input_dir)
    state = job.state
    job.advance("claimed", inputs=taken,
                image=state.image if state.image in taken else None,
                sidecar=state.sidecar if state.sidecar in taken else None)
    log.info("claimed", job_id=job.id, job=job.state.key, files=taken)
    return job


def _drop_second_name(source: Path, target: Path) -> None:
    """A rename made as a hard link and an unlink (NFS) and cut off in between leaves the claimed file
    under both names: the inbox's goes, finishing the rename, so the job is not seen again in the inbox
    and its input is not taken for a hard link (hardlinked_inputs)."""
    with contextlib.suppress(FileNotFoundError):
        left, claimed = os.lstat(source), os.lstat(target)
        if (left.st_dev, left.st_ino) == (claimed.st_dev, claimed.st_ino):
            os.unlink(source)


def _give_back(settings: Settings, job: Job, taken: list[str]) -> None:
    """Undo a claim half-way (its sidecar could not be taken with its image, say), so the job is
    never run with only part of what the user dropped."""
    target_dir = settings.inbox / job.rel_dir
    for name in taken:
        rename_noreplace(job.input(name), target_dir / name)
    job.remove()


def resume_claim(settings: Settings, job: Job) -> Job | None:
    """Finish a claim that a crash interrupted (or undo it when nothing had moved yet)."""
    nothing_moved = not any(os.path.lexists(job.input(name)) for name in job.state.inputs)
    if nothing_moved and (job.state.inputs or not job.state.left_in_place):
        job.remove()
        return None
    return _finish_claim(settings, job)


def requeue(settings: Settings, job: Job) -> bool:
    """Put a job's inputs back into the inbox, untouched; False if a name there is taken meanwhile."""
    target_dir = safe_subdir(settings.inbox, job.rel_dir)
    names = [n for n in job.state.inputs if os.path.lexists(job.input(n))]
    if any(os.path.lexists(target_dir / n) for n in names):
        return False
    job.advance("claiming")  # a crash half-way through is then finished as a claim on restart
    for name in names:
        rename_noreplace(job.input(name), target_dir / name)
    fsync_dir(target_dir)
    job.remove()
    return True
