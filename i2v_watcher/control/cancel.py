"""Cancel: a marker file, `cancel`, in a running job's folder (work/<worker_id>/<job_id>/cancel), saying
who cancelled and when. The folder moves with the job (a takeover renames it), so whichever worker
runs the job sees the marker at its next progress point (Checkpoint.poll, at most every second:
job.checkpoint.CANCEL_PROBE_S) and the job ends in failed/ with a `cancelled` report, its partial
outputs removed.

The race with a publish has one rule: the job's `publishing` state is the commit point. The pipeline
reads the marker once more right before it publishes, and never after: a cancel written before that
read wins, one written after it comes too late (the job is published, and the marker goes with its
folder). A crash in between resumes the job before `publishing`, where the marker is read again, so
a cancel is never lost and a cancelled job never published."""

from __future__ import annotations

import socket
from pathlib import Path

from i2v_watcher.control.pause import who
from i2v_watcher.fs.atomic import read_json, write_json_atomic
from i2v_watcher.job.records import utc_now

CANCEL_FILE = "cancel"
MAX_CANCEL_BYTES = 64 * 1024


def cancel_marker(job_dir: Path, by: str | None = None) -> None:
    """Ask the worker that runs this job to cancel it; `by`: who asks (default: this login)."""
    said = {"by": by or who(), "host": socket.gethostname(), "at": utc_now()}
    write_json_atomic(job_dir / CANCEL_FILE, said)


def cancel_message(by: object, at: object) -> str:
    return f"cancelled by {by or 'an operator'}" + (f" at {at}" if at else "")


def cancelled(job_dir: Path) -> str | None:
    """The cancel's words when the job's folder holds a marker (even one that cannot be read)."""
    path = job_dir / CANCEL_FILE
    try:
        said = read_json(path, MAX_CANCEL_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return cancel_message(None, None) if path.exists() else None
    return cancel_message(said.get("by"), said.get("at"))
