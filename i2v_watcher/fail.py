"""Fail: move a job's inputs to failed/ with `<name>.error.json`, a report a person can act on.

The report is written last, so its presence means the failure was recorded completely; `retry` reads
it to put the inputs back into the inbox.
"""

from __future__ import annotations

from typing import Any

import structlog

from i2v_watcher.config import Settings
from i2v_watcher.faults import crashpoint
from i2v_watcher.fsutil import write_json_atomic
from i2v_watcher.job import Job, utc_now

log = structlog.get_logger("i2v_watcher.fail")
REPORT_SUFFIX = ".error.json"


def fail(settings: Settings, job: Job, error: dict[str, Any]) -> None:
    """Record the failure in the job's state first, so that a crash half-way still ends in failed/."""
    if job.state.stage != "failing":
        job.advance("failing", error=error)
    folder = settings.failed / job.rel_dir
    names = job.move_inputs(folder, also=(REPORT_SUFFIX,))
    crashpoint("fail.after_move")
    stem = job.state.moved_stem
    report = {
        "job_id": job.id,
        "input": job.state.key,
        "files": names,
        **(job.state.error or error),
        "attempts": job.state.attempts,
        "worker_id": job.state.worker_id,
        "claimed_at": job.state.claimed_at,
        "failed_at": utc_now(),
    }
    write_json_atomic(folder / f"{stem}{REPORT_SUFFIX}", report)
    job.remove()
    log.warning("failed", stage=report.get("stage"), error=report.get("message"),
                report=str(folder / f"{stem}{REPORT_SUFFIX}"))
