"""Every worker of the work folder, as `status`, the dashboard and its /metrics show it: one pass that
reads each heartbeat with its file's mtime, takes one reading of now on the share's clock, and asks
the judge (work.liveness). The three callers share this function, so at one moment they agree."""

from __future__ import annotations

import os
from pathlib import Path

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.worker_records import HeartbeatRecord, WorkerRow
from i2v_watcher.work.lease import HEARTBEAT_FILE, LOCK_FILE, QUEUE, read_beat, worker_folders
from i2v_watcher.work.liveness import activity, judge, process_state, share_now, thresholds

NO_HEARTBEAT = "no readable heartbeat"


def _mtime(path: Path) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def _seen(folder: Path) -> tuple[HeartbeatRecord | None, float | None]:
    """The heartbeat, and when it was written on the share's clock (read after the content: the mtime
    is then at least as new as what was read). Without one, the folder's mtime: every beat renames a
    file into it, so a folder unchanged for lease_timeout_s has not beaten for that long either."""
    beat = read_beat(folder)
    return beat, _mtime(folder / HEARTBEAT_FILE if beat is not None else folder)


def _lock_only(folder: Path) -> bool:
    """Nothing in the folder but a worker's lock: no heartbeat was ever written there, no job."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries} <= {LOCK_FILE}
    except OSError:
        return False


def _never_ran(settings: Settings, at: float | None, now: float | None) -> bool:
    """A folder with nothing but a lock in it, unchanged for longer than a start may take (the lease
    checked, each backend loaded): a start that was killed before its first beat (a failed start
    removes its folder). Nobody to wait for, no job to take over: not shown as a worker."""
    longest_start = settings.lease_timeout_s + settings.load_timeout_s
    return at is not None and now is not None and now - at > longest_start


def survey(settings: Settings, *, queue: bool = False) -> list[WorkerRow]:
    """Each worker's liveness, activity and heartbeat, in name order; not a start that never ran
    (_never_ran). With `queue`, last, the Celery dispatcher's (`run`, which holds work/queue/ as a
    worker of that name) where that folder exists. OSError: work/ cannot be read."""
    folders = worker_folders(settings)
    if queue and (settings.work / QUEUE).is_dir():
        folders.append(settings.work / QUEUE)
    seen = {folder: _seen(folder) for folder in folders}
    now, clock = share_now(settings.work, [at for beat, at in seen.values() if beat is not None and at])
    return [_row(folder.name, beat, at, now, clock, settings) for folder, (beat, at) in seen.items()
            if beat is not None or not (_never_ran(settings, at, now) and _lock_only(folder))]


def _row(name: str, beat: HeartbeatRecord | None, at: float | None, now: float | None, clock: str,
         settings: Settings) -> WorkerRow:
    age = None if at is None or now is None else max(0.0, now - at)
    process = None if beat is None else process_state(beat)
    state = judge(beat, age, thresholds(beat, settings), process)
    row = WorkerRow(worker_id=name, state=state, activity=activity(beat), clock=clock, process=process,
                    heartbeat_age_s=None if age is None else round(age, 1))
    if beat is None:
        row.detail = NO_HEARTBEAT
        row.heartbeat_age_s = None  # the folder's age is evidence, not a heartbeat's
        return row
    shown = beat.model_dump(include=set(WorkerRow.model_fields) - {"worker_id", "state"})
    return row.model_copy(update={**shown, "jobs": beat.jobs})
