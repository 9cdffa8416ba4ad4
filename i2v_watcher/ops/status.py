"""`status`: what the shared folders hold (queued, in progress, done, failed) and the workers, read
from the folders only, so that it works from any host and while a daemon runs.

Everything read there is untrusted: the folders are shared, so anyone who can write them can plant a
link, an unreadable folder or an edited report. Links are never followed, and a bad state file or
report is shown as unreadable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import IMAGE_SUFFIXES, Inbox
from i2v_watcher.job.records import MAX_STATE_BYTES, JobState
from i2v_watcher.job.state import STATE_FILE, TRASH_PREFIX
from i2v_watcher.ops.reading import (
    UNREADABLE,
    Warn,
    folder_exists,
    list_files,
    printable,
    reason,
    subfolders,
    walk_folder,
)
from i2v_watcher.ops.reports import failed_jobs
from i2v_watcher.work.lease import survey

DONE_SHOWN = 10  # the text lists this many of the latest done jobs; --json lists them all
# Each count and the folder it is read from: a folder that does not exist gives no count (null), not 0.
COUNTED = {"queued": "inbox", "in_progress": "work", "done": "outbox", "failed": "failed",
           "workers_alive": "work"}


















def _state_files(work: Path, warn: Warn) -> list[Path]:
    """work/<worker_id>/<job_id>/job.json of every job, finished ones being deleted left out."""
    if not folder_exists("work", work, warn):
        return []
    return [job / STATE_FILE for worker in subfolders(work, warn) for job in subfolders(worker, warn)
            if not job.name.startswith(TRASH_PREFIX) and os.path.lexists(job / STATE_FILE)]


def _job_entry(state_file: Path) -> dict[str, Any]:
    try:
        state = JobState.read(state_file, MAX_STATE_BYTES)
    except UNREADABLE as exc:
        return {"job_id": state_file.parent.name, "job": None, "worker_id": state_file.parent.parent.name,
                "stage": "unreadable", "claimed_at": None, "error": reason(exc)}
    return {"job_id": state.job_id, "job": state.key, "worker_id": state.worker_id, "stage": state.stage,
            "claimed_at": state.claimed_at}




def jobs_in_progress(settings: Settings, warn: Warn) -> list[dict[str, Any]]:
    return [_job_entry(path) for path in _state_files(settings.work, warn)]




def collect(settings: Settings) -> dict[str, Any]:
    """Counts and lists of jobs from the folders, and `warnings` for what could not be read."""
    warnings: list[str] = []
    skip = Inbox(settings).is_ignored
    queued = [str(p) for p in list_files("inbox", settings.inbox, skip, warnings.append)
              if p.suffix.lower() in IMAGE_SUFFIXES]
    in_progress = jobs_in_progress(settings, warnings.append)
    # Done: published jobs, whose `<name>.json` metadata is written last; oldest first (publishing order).
    outbox = walk_folder("outbox", settings.outbox, skip, warnings.append)
    markers = [(st.st_mtime, path) for path, st in outbox if path.suffix == ".json"]
    done = [str(path.with_suffix("")) for _, path in sorted(markers)]
    failed = failed_jobs(settings, warnings.append)
    workers = survey(settings) if settings.work.is_dir() else []
    counts: dict[str, int | None] = {
        "queued": len(queued), "in_progress": len(in_progress), "done": len(done), "failed": len(failed),
        "workers_alive": sum(w["state"] == "alive" for w in workers)}
    for key, folder in COUNTED.items():
        if not getattr(settings, folder).is_dir():
            counts[key] = None
    return {"counts": counts, "workers": workers, "queued": queued, "in_progress": in_progress, "done": done,
            "failed": failed, "warnings": warnings}


def missing_folders(settings: Settings) -> dict[str, Path]:
    """The folders `status` reads that do not exist."""
    return {name: getattr(settings, name) for name in dict.fromkeys(COUNTED.values())
            if not getattr(settings, name).is_dir()}


def _job_line(job: dict[str, Any]) -> str:
    if job["stage"] == "unreadable":
        return f"  {job['worker_id']}/{job['job_id']}  (unreadable: {job['error']})"
    return f"  {job['job']}  ({job['stage']} on {job['worker_id']}, {job['job_id']})"


def _worker_line(worker: dict[str, Any]) -> str:
    line = f"  {worker['worker_id']}  {worker['state']}"
    if worker.get("host"):
        line += f" on {worker['host']} (pid {worker.get('pid')}, {worker.get('backend') or '?'})"
    if worker.get("job") and worker["state"] == "alive":
        progress = f" {worker['done']}/{worker['total']}" if worker.get("total") else ""
        line += f": {worker['job']} [{worker.get('stage')}{progress}]"
    return line


def _count_line(key: str, label: str, count: int | None) -> str:
    if count is None:  # never a zero for a folder that is not there
        return f"{label:<12} ?  (the {COUNTED[key]} folder does not exist)"
    return f"{label:<12} {count}"


def render(status: dict[str, Any]) -> str:
    counts = status["counts"]
    lines = [_count_line(key, label, counts[key]) for key, label in
             (("queued", "queued"), ("in_progress", "in progress"), ("done", "done"), ("failed", "failed"))]
    if status["workers"]:
        lines += ["", "workers:"] + [_worker_line(w) for w in status["workers"]]
    if status["queued"]:
        lines += ["", "queued:"] + [f"  {name}" for name in status["queued"]]
    if status["in_progress"]:
        lines += ["", "in progress:"] + [_job_line(job) for job in status["in_progress"]]
    if status["done"]:
        done = status["done"]
        earlier = [f"  … {len(done) - DONE_SHOWN} earlier (`status --json` lists them all)"] \
            if len(done) > DONE_SHOWN else []
        lines += ["", "done (latest last):", *earlier] + [f"  {name}" for name in done[-DONE_SHOWN:]]
    if status["failed"]:
        lines += ["", "failed:"] + [f"  {f['name']}  [{f.get('stage')}] {f.get('message')}"
                                    for f in status["failed"]]
    return "\n".join(printable(line) for line in lines)












# retry


















