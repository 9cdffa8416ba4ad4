"""Claim: take a job out of the inbox with atomic renames into work/<worker_id>/<job_id>/input/.

The job's state is written before the first rename, so a crash between two renames is finished (or
undone) on restart. Only one of several workers can win a rename, which is what later lets several
hosts share one inbox.
"""

from __future__ import annotations

import errno
import os

import structlog

from i2v_watcher.config import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.faults import crashpoint
from i2v_watcher.fsutil import fsync_dir
from i2v_watcher.job import Job, JobState, new_job_id
from i2v_watcher.watch import Candidate

log = structlog.get_logger("i2v_watcher.claim")
_GONE = (errno.ENOENT, errno.ESTALE, errno.ENOTCONN, errno.EIO)


def claim(settings: Settings, candidate: Candidate) -> Job | None:
    """Claim the candidate's files; None when another process took them first."""
    job_id = new_job_id()
    folder = settings.worker_dir / job_id
    (folder / "input").mkdir(parents=True)
    job = Job(folder, JobState(
        job_id=job_id, worker_id=settings.worker_id, stage="claiming", key=candidate.key,
        inputs=[p.name for p in candidate.files],
        image=candidate.image.name if candidate.image else None,
        sidecar=candidate.sidecar.name if candidate.sidecar else None,
        problem=candidate.problem, mtime=candidate.mtime,
    ))
    job.save()
    crashpoint("claim.before_rename")
    return _finish_claim(settings, job)


def _finish_claim(settings: Settings, job: Job) -> Job | None:
    source_dir = settings.inbox / job.rel_dir
    taken: list[str] = []
    for name in job.state.inputs:
        target = job.input(name)
        if os.path.lexists(target):
            taken.append(name)
            continue
        try:
            os.rename(source_dir / name, target)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            if not taken:  # the main file is gone: someone else has it, or the share went away
                job.remove()
                if exc.errno != errno.ENOENT:
                    raise InboxUnavailable(str(exc)) from exc
                return None
            continue  # a sidecar that vanished meanwhile: the job goes on without it
        taken.append(name)
        crashpoint("claim.after_rename")
    fsync_dir(job.input_dir)
    state = job.state
    job.advance("claimed", inputs=taken,
                image=state.image if state.image in taken else None,
                sidecar=state.sidecar if state.sidecar in taken else None)
    log.info("claimed", job_id=job.id, job=job.state.key, files=taken)
    return job


def resume_claim(settings: Settings, job: Job) -> Job | None:
    """Finish a claim that a crash interrupted (or undo it when nothing had moved yet)."""
    if not any(os.path.lexists(job.input(name)) for name in job.state.inputs):
        job.remove()
        return None
    return _finish_claim(settings, job)


def requeue(settings: Settings, job: Job) -> bool:
    """Put a job's inputs back into the inbox, untouched; False if a name there is taken meanwhile."""
    target_dir = settings.inbox / job.rel_dir
    names = [n for n in job.state.inputs if os.path.lexists(job.input(n))]
    if any(os.path.lexists(target_dir / n) for n in names):
        return False
    target_dir.mkdir(parents=True, exist_ok=True)
    job.advance("claiming")  # a crash half-way through is then finished as a claim on restart
    for name in names:
        os.rename(job.input(name), target_dir / name)
    fsync_dir(target_dir)
    job.remove()
    return True
