"""`cancel NAME...`: a queued job is claimed by the command itself, with a cancel marker in its folder
before its files move, and failed at once (failed/, a `cancelled` report); a running job gets the
marker in its folder, and the command waits for the worker that runs it to fail it (control.cancel
has the rule for a cancel that races a publish), then says how the job ended, as the event log has it.
A command killed half-way leaves a claimed job with its marker in work/cancel-…/, which a daemon takes
over as any stale worker's and fails as cancelled.

In Celery mode a job claimed by `run` waits in work/queue/ while its task is in the broker: the command
marks it, notes the cancel in the broker, and takes the folder out of the queue with one rename, so the
task, when a worker gets it, finds nothing to do (and says it was cancelled); a worker that renamed the
folder first carries the marker with it and fails the job without running it."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings
from i2v_watcher.control.cancel import cancel_marker, cancelled
from i2v_watcher.errors import StartupError
from i2v_watcher.inbox.watch import Candidate, Inbox
from i2v_watcher.job.records import MAX_STATE_BYTES, JobState
from i2v_watcher.job.state import STATE_FILE, TRASH_PREFIX, Job
from i2v_watcher.ops.control import record
from i2v_watcher.run.fail import fail_cancelled
from i2v_watcher.work.claim import claim
from i2v_watcher.work.lease import QUEUE, worker_folders
from i2v_watcher.work.store import WorkStore

WAIT_S = 20.0  # a running job stops within 15 s (at its next progress point): then the command says how
PUBLISHED = ("publishing", "published")
TAIL_BYTES = 64 * 1024  # of each event log, where a job that just ended has its line


@dataclass
class Outcome:
    name: str
    cancelled: bool
    message: str


def cancel(settings: Settings, name: str, by: str | None = None) -> Outcome | None:
    """Cancel one job by its name as `status` lists it; None when no queued or running job has it.
    `by`: who cancels, as the report says it (default: this login; the dashboard: its session)."""
    candidate = _queued(settings, name)
    if candidate is not None:
        outcome = _cancel_queued(settings, candidate, by)
        if outcome is not None:
            return outcome
    waiting = _find(settings.work / QUEUE, name, ("claiming", "failing"))  # Celery mode: claimed by `run`
    if waiting is not None:
        outcome = _cancel_in_queue(settings, name, waiting[0], by)
        if outcome is not None:
            return outcome
    # A second look: a takeover may move the folder into a worker's folder already looked at.
    found = _running(settings, name) or _running(settings, name)
    return None if found is None else _cancel_running(settings, name, *found, by=by)


def _queued(settings: Settings, name: str) -> Candidate | None:
    """The ready job of that name in the inbox, waited for while its files settle."""
    inbox = Inbox(settings)
    deadline = time.monotonic() + settings.settle_s + 1.0
    while True:
        scan = inbox.scan()
        found = next((c for c in scan.ready if c.key == name and c.marker is None), None)
        if found is not None or time.monotonic() >= deadline:
            return found
        if not any(q.key == name for q in inbox.listing()):
            return None
        time.sleep(min(0.2, settings.settle_s))


def _cancel_queued(settings: Settings, candidate: Candidate, by: str | None) -> Outcome | None:
    """None when a worker claimed it first (then it is running)."""
    mine = _canceller(settings)
    job = claim(mine, WorkStore(mine), candidate, before=lambda job: cancel_marker(job.dir, by))
    return None if job is None else _failed_here(mine, job, candidate.key)


def _cancel_in_queue(settings: Settings, name: str, folder: Path, by: str | None) -> Outcome | None:
    """A job in work/queue/: marked first (a worker that takes it meanwhile carries the marker), its
    cancel noted in the broker, then taken with one rename. None when a worker took it first."""
    cancel_marker(folder, by)
    if settings.coordination == "celery" and settings.broker_url is not None:
        with contextlib.suppress(ImportError):  # the celery extra: without it no worker runs anyway
            from i2v_watcher.service.broker import note_cancel
            note_cancel(settings, folder.name, cancelled(folder) or "cancelled")
    mine = _canceller(settings)
    mine.worker_dir.mkdir(parents=True, exist_ok=True)
    job = WorkStore(mine).take(folder, QUEUE)
    if job is None:
        with contextlib.suppress(OSError):
            os.rmdir(mine.worker_dir)
        return None
    return _failed_here(mine, job, name)


def _canceller(settings: Settings) -> Settings:
    """The command's own worker folder: work/cancel-…/ (see the module's docstring)."""
    return settings.model_copy(update={"worker_id": f"cancel-{secrets.token_hex(4)}"})


def _failed_here(mine: Settings, job: Job, name: str) -> Outcome:
    said = fail_cancelled(mine, job)
    with contextlib.suppress(OSError):
        os.rmdir(mine.worker_dir)
    return Outcome(name, True, f"{name}: {said} (was queued; its files are in failed/)")


def _running(settings: Settings, name: str) -> tuple[Path, JobState] | None:
    for worker in worker_folders(settings):
        found = _find(worker, name, ("failing",))
        if found is not None:
            return found
    return None


def _find(folder: Path, name: str, but: tuple[str, ...]) -> tuple[Path, JobState] | None:
    """The job of that name in one worker's folder (or the queue's), with its state; not one whose
    stage is one of `but`."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TRASH_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError, ValueError):
                state = JobState.read(Path(entry.path) / STATE_FILE, MAX_STATE_BYTES)
                if state.key == name and state.stage not in but:
                    return Path(entry.path), state
    return None


def _cancel_running(settings: Settings, name: str, folder: Path, state: JobState, *,
                    by: str | None) -> Outcome:
    if state.stage in PUBLISHED:
        return _too_late(name, f"it is being published (on {folder.parent.name})")
    cancel_marker(folder, by)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        now = _where(settings, state.job_id)
        if now is not None and now.stage in PUBLISHED:
            return _too_late(name, "it was being published when the cancel came")
        ended = _ended(settings, state.job_id) if now is None else None
        if ended == "published":  # published between two looks: the marker went with its folder
            return _too_late(name, "it was published before the cancel was seen")
        if ended == "cancelled":
            return Outcome(name, True, f"{name}: cancelled (was running; its files are in failed/)")
        if ended is not None:
            return Outcome(name, False, f"{name}: it failed on its own (stage {ended}) before the cancel "
                                        "was seen; its files are in failed/")
        time.sleep(0.2)  # gone without a line in the event log yet, or moved by a takeover: look again
    if _where(settings, state.job_id) is None:
        return Outcome(name, False, f"{name}: it left the work folder, but the event log does not say how: "
                                    "see failed/ and the outbox")
    return Outcome(name, True, f"{name}: cancel requested; the worker {folder.parent.name} has not acted on "
                               f"it within {WAIT_S:g} s (it stops at its next progress point)")


def _too_late(name: str, why: str) -> Outcome:
    """The commit point passed (control.cancel): a publish that began is finished, by a takeover if its
    worker dies, and the cancel is void."""
    return Outcome(name, False, f"{name}: too late to cancel, {why}; it will be in the outbox, not failed/")


def _ended(settings: Settings, job_id: str) -> str | None:
    """How a job that left the work folder ended, as the event log says: "published", or the stage
    its failure report names ("cancelled" when the cancel won); None when no log says yet."""
    for path in events.logs(settings):
        for event in events.read_tail(path, TAIL_BYTES):
            if event.get("job_id") == job_id and event.get("kind") in ("published", "failed"):
                return "published" if event["kind"] == "published" else str(event.get("stage"))
    return None


def _where(settings: Settings, job_id: str) -> JobState | None:
    """The job's state wherever it is now (a takeover moves its folder); None once it is gone."""
    for worker in worker_folders(settings):
        with contextlib.suppress(OSError, ValueError):
            return JobState.read(worker / job_id / STATE_FILE, MAX_STATE_BYTES)
    return None


def cancel_command(settings: Settings, args: argparse.Namespace) -> int:
    """`cancel`: one line per job on stdout; 0 all cancelled, 1 some too late, 2 some unknown."""
    names: list[str] = args.names
    missing = [str(folder) for folder in (settings.work, settings.failed) if not folder.is_dir()]
    if missing:  # before any job is claimed: a share not mounted, or paths that are wrong
        raise StartupError(f"cannot cancel: {' and '.join(missing)} do not exist (is the share mounted?)")
    code = 0
    for name in names:
        outcome = cancel(settings, name.strip("/"))
        if outcome is None:
            print(f"i2v-watcher: no queued or running job named {name!r} (see `i2v-watcher status`)",
                  file=sys.stderr)
            code = 2
            continue
        print(outcome.message)
        if outcome.cancelled:
            record(settings, "cancelled", name=outcome.name)
        else:
            code = max(code, 1)
    return code
