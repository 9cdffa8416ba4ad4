"""Fail: move a job's inputs to failed/ with `<name>.error.json`, a report a person can act on: what went
wrong and what to do, in words; the Python traceback goes to the worker's log, never to the report.

The report is written last, so its presence means the failure was recorded completely; `retry` reads
it to put the inputs back into the inbox.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import structlog

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings
from i2v_watcher.control.cancel import cancel_message, cancelled
from i2v_watcher.errors import JobCancelledByOperator
from i2v_watcher.faults import crashpoint
from i2v_watcher.fs.atomic import kind_of, write_json_atomic
from i2v_watcher.fs.detours import blocked_part
from i2v_watcher.job.records import REPORT_SUFFIX as REPORT_SUFFIX
from i2v_watcher.job.records import FailureReport, JobFailure, utc_now
from i2v_watcher.job.state import Job

log = structlog.get_logger("i2v_watcher.run.fail")


def fail(settings: Settings, job: Job, error: JobFailure | None = None) -> None:
    """Record the failure in the job's state first, so that a crash half-way still ends in failed/;
    without `error`, a job found failing after a restart is finished with the one it recorded."""
    if job.state.stage != "failing":
        job.advance("failing", error=error)
    failure = job.state.error or error
    assert failure is not None, "a job fails with the error that failed it"
    names = job.move_inputs(settings.failed, settings.inbox, also=(REPORT_SUFFIX,))
    crashpoint("fail.after_move")
    report = FailureReport(job_id=job.id, input=job.state.key, files=names,
                           **failure.model_dump(exclude={"traceback"}),
                           traceback=traceback_pointer(job, failure),
                           attempts=job.state.attempts, worker_id=job.state.worker_id,
                           claimed_at=job.state.claimed_at, failed_at=utc_now())
    left = _left_in_inbox(settings, job)
    if left:
        report.left_in_inbox = left
        report.hint = " ".join(filter(None, [report.hint, (
            f"{', '.join(left)} stayed in the inbox: failed/ is on another filesystem, and links and "
            "special files are never opened or copied; remove them there")]))
    if job.moved_rel != job.rel_dir:
        report.hint = " ".join(filter(None, [report.hint, detour_note(settings.failed, "failed", job)]))
    path = settings.failed / job.moved_rel / f"{job.state.moved_stem}{REPORT_SUFFIX}"
    job.check_owned()  # a worker that lost the job to another never reports it
    write_json_atomic(path, report.to_json(), token=job.id)  # under the name reserved for this job
    job.release_moved_name(settings.failed)
    job.remove()
    # The traceback is for whoever runs the daemon, here; the user's report points to it.
    trace = {"exception": failure.traceback} if failure.traceback else {}
    log.warning("failed", stage=report.stage, error=report.message, report=str(path), **trace)
    events.append(settings, "failed", job_id=job.id, name=job.stem, stage=report.stage,
                  report=path.relative_to(settings.failed).as_posix())


def fail_cancelled(settings: Settings, job: Job) -> str:
    """A job cancelled before it ran (its cancel marker in its folder: control.cancel) goes straight to
    failed/ with a `cancelled` report; the cancel's words."""
    said = cancelled(job.dir) or cancel_message(None, None)
    error = JobCancelledByOperator(said)
    fail(settings, job, JobFailure(stage=error.stage, error_class=type(error).__name__, message=said,
                                   hint=error.hint))
    return said


def traceback_pointer(job: Job, failure: JobFailure) -> str:
    """What a report says in place of the Python traceback (which is for the log, not for the user)."""
    if not failure.traceback:
        return "none: the message says why the job's files could not be made into a video"
    return (f"not in this report: in the log of worker {job.state.worker_id}, on its line \"failed\" "
            f"of job_id {job.id}")


def shown_folder(label: str, rel: PurePosixPath) -> str:
    """A folder as a report names it: `failed/trip/`, `done/` (never `done/./`)."""
    return f"{label}/" if str(rel) == "." else f"{label}/{rel}/"


def detour_note(root: Path, label: str, job: Job) -> str:
    """Why the job's files are not in <label>/<its folder>/, and where they are."""
    blocked = blocked_part(root, job.rel_dir)
    what = f"{label}/{blocked[0]} is {blocked[1]}" if blocked else f"{label}/{job.rel_dir} was not a folder"
    return (f"{what} (a file where this job's folder belongs), so this job's files are in "
            f"{shown_folder(label, job.moved_rel)} instead; `retry` puts them back into "
            f"{shown_folder('inbox', job.rel_dir)}")


def _left_in_inbox(settings: Settings, job: Job) -> dict[str, str]:
    """What each input left in the inbox is (lstat only: never opened)."""
    found = {}
    for name in job.state.left_in_place:
        try:
            found[name] = kind_of(os.lstat(settings.inbox / job.rel_dir / name).st_mode)
        except OSError:
            found[name] = "gone"
    return found
