"""`status`: what the shared folders hold (queued, in progress, done, failed) and the workers, read
from the folders only, so that it works from any host and while a daemon runs.

Everything read there is untrusted: the folders are shared, so anyone who can write them can plant a
link, an unreadable folder or an edited report. Links are never followed, and a bad state file or
report is shown as unreadable.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from i2v_watcher.catalog.index import Catalog, default_path
from i2v_watcher.catalog.ranks import variant
from i2v_watcher.config.settings import Settings
from i2v_watcher.control.pause import pause_line, pauses
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.fs.atomic import read_json
from i2v_watcher.inbox.queue import queued_jobs, shown_file
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.records import MAX_RECORD_BYTES, MAX_STATE_BYTES, JobState
from i2v_watcher.job.state import STATE_FILE, TRASH_PREFIX
from i2v_watcher.job.worker_records import StatusCounts, StatusSnapshot, WorkerRow
from i2v_watcher.ops.reading import (
    UNREADABLE,
    Warn,
    folder_exists,
    printable,
    reason,
    subfolders,
    walk_folder,
)
from i2v_watcher.ops.reports import failed_jobs
from i2v_watcher.work.routing import unroutable, waiting_for
from i2v_watcher.work.survey import survey

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




def queued_files(settings: Settings, warn: Warn, found: list[WorkerRow] | None = None
                 ) -> tuple[list[str], dict[str, str]]:
    """One file of each queued job (inbox.queue says what is queued), in the order they are taken;
    and those whose backend none of the live workers in `found` loaded, with that backend."""
    if not folder_exists("inbox", settings.inbox, warn):
        return [], {}
    try:
        rows = unroutable(queued_jobs(Inbox(settings), warn), found or [])
    except InboxUnavailable as exc:
        warn(f"cannot read the inbox: {exc}")
        return [], {}
    files = [shown_file(job, settings.inbox) for job in rows]
    return files, {name: job.backend for name, job in zip(files, rows, strict=True)
                   if job.backend is not None and job.why == waiting_for(job.backend)}


def workers(settings: Settings, warn: Warn) -> list[WorkerRow]:
    """Every worker, judged at this moment (work.survey, as the dashboard does)."""
    if not settings.work.is_dir():
        return []
    try:
        return survey(settings)
    except OSError as exc:
        warn(f"cannot read the work folder: {reason(exc)}")
        return []


def collect(settings: Settings) -> dict[str, Any]:
    """What `status --json` prints."""
    return snapshot(settings).as_json()


def snapshot(settings: Settings) -> StatusSnapshot:
    """Counts and lists of jobs from the folders, and `warnings` for what could not be read."""
    warnings: list[str] = []
    found = workers(settings, warnings.append)
    queued, waiting = queued_files(settings, warnings.append, found)
    in_progress = jobs_in_progress(settings, warnings.append)
    done = published(settings, warnings.append)
    failed = failed_jobs(settings, warnings.append)
    counts = StatusCounts(queued=len(queued), in_progress=len(in_progress), done=len(done),
                          failed=len(failed), workers_alive=sum(w.up for w in found))
    for key, folder in COUNTED.items():
        if not getattr(settings, folder).is_dir():
            setattr(counts, key, None)
    return StatusSnapshot(counts=counts, workers=found, queued=queued, unroutable=waiting,
                          in_progress=in_progress, done=done, failed=failed, warnings=warnings,
                          done_variants=done_variants(settings.outbox, done[-DONE_SHOWN:]),
                          paused={k: r.model_dump(mode="json") for k, r in pauses(settings).items()})


def published(settings: Settings, warn: Warn) -> list[str]:
    """Done: the published jobs, oldest first, from this host's catalog (catalog.index: kept current
    from the event logs, so `status` never walks a large outbox), or where it cannot be used, from a
    walk of the outbox's names (a metadata file `<name>.json` is written last)."""
    if not folder_exists("outbox", settings.outbox, warn):
        return []
    try:
        catalog = Catalog(settings)
        try:
            catalog.refresh()
            return [rel.removesuffix(".json") for rel in catalog.names()]
        finally:
            catalog.close()
    except (OSError, sqlite3.Error) as exc:
        warn(f"cannot use the catalog at {default_path(settings)}: {reason(exc)}; walking the outbox")
    outbox = walk_folder("outbox", settings.outbox, Inbox(settings).is_ignored, warn)
    markers = [(st.st_mtime, path) for path, st in outbox if path.suffix == ".json"]
    return [str(path.with_suffix("")) for _, path in sorted(markers)]


def done_variants(outbox: Path, names: list[str]) -> dict[str, str]:
    """Which of these done jobs are variants of a set, from their metadata: read for the latest few
    alone, so that `status` stays a walk of names however full the outbox is. The rank among the set
    is the dashboard's (it needs the whole set read)."""
    found = {}
    for name in names:
        try:
            data = read_json(outbox / f"{name}.json", MAX_RECORD_BYTES)  # its `variant` is all we need
        except UNREADABLE:
            continue
        one = variant(data.get("variant"))
        if one is not None:
            found[name] = f"variant {one.index} of {one.count}"
    return found


def missing_folders(settings: Settings) -> dict[str, Path]:
    """The folders `status` reads that do not exist."""
    return {name: getattr(settings, name) for name in dict.fromkeys(COUNTED.values())
            if not getattr(settings, name).is_dir()}


def _job_line(job: dict[str, Any]) -> str:
    if job["stage"] == "unreadable":
        return f"  {job['worker_id']}/{job['job_id']}  (unreadable: {job['error']})"
    return f"  {job['job']}  ({job['stage']} on {job['worker_id']}, {job['job_id']})"


def _worker_line(worker: WorkerRow) -> str:
    line = f"  {worker.worker_id}  {worker.state}"
    if worker.host:
        line += f" on {worker.host} (pid {worker.pid}, {worker.backend or '?'})"
    if worker.state not in ("alive", "stopped") and worker.heartbeat_age_s is not None:
        line += f", last beat {worker.heartbeat_age_s:g} s ago"
    if worker.paused and worker.state != "stopped":
        line += ", PAUSED"
    if worker.process == "frozen":
        line += ", its process is frozen (SIGSTOP)"
    if worker.job and worker.up:
        progress = f" {worker.done}/{worker.total}" if worker.total else ""
        line += f": {worker.job} [{worker.stage}{progress}]"
    return line


def _count_line(key: str, label: str, count: int | None) -> str:
    if count is None:  # never a zero for a folder that is not there
        return f"{label:<12} ?  (the {COUNTED[key]} folder does not exist)"
    return f"{label:<12} {count}"


def render(status: StatusSnapshot) -> str:
    counts = status.counts
    lines = [_count_line(key, label, getattr(counts, key)) for key, label in
             (("queued", "queued"), ("in_progress", "in progress"), ("done", "done"), ("failed", "failed"))]
    lines += [pause_line(whom, record) for whom, record in status.paused.items()]
    if status.workers:
        lines += ["", "workers:"] + [_worker_line(w) for w in status.workers]
    if status.queued:
        lines += ["", "queued:"] + [f"  {name}" + (f"  ({waiting_for(status.unroutable[name])})"
                                                   if name in status.unroutable else "")
                                    for name in status.queued]
    if status.in_progress:
        lines += ["", "in progress:"] + [_job_line(job) for job in status.in_progress]
    if status.done:
        done = status.done
        earlier = [f"  … {len(done) - DONE_SHOWN} earlier (`status --json` lists them all)"] \
            if len(done) > DONE_SHOWN else []
        lines += ["", "done (latest last):", *earlier] + [
            f"  {name}" + (f"  ({status.done_variants[name]})" if name in status.done_variants else "")
            for name in done[-DONE_SHOWN:]]
    if status.failed:
        lines += ["", "failed:"] + [f"  {f['name']}  [{f.get('stage')}] {f.get('message')}"
                                    for f in status.failed]
    return "\n".join(printable(line) for line in lines)












# retry


















