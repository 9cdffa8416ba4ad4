"""`cancel NAME...`: a queued job is claimed by the command itself, with a cancel marker in its folder
before its files move, and failed at once (failed/, a `cancelled` report); a running job gets the
marker in its folder, and the command waits for the worker that runs it to fail it (control.cancel
has the rule for a cancel that races a publish). A command killed half-way leaves a claimed job with
its marker in work/cancel-…/, which a daemon takes over as any stale worker's and fails as cancelled."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.cancel import cancel_marker, cancelled
from i2v_watcher.errors import JobCancelledByOperator, StartupError
from i2v_watcher.inbox.watch import Candidate, Inbox
from i2v_watcher.job.records import MAX_STATE_BYTES, JobFailure, JobState
from i2v_watcher.job.state import STATE_FILE, TRASH_PREFIX
from i2v_watcher.ops.control import record
from i2v_watcher.run.fail import fail
from i2v_watcher.work.claim import claim
from i2v_watcher.work.lease import worker_folders
from i2v_watcher.work.store import WorkStore

WAIT_S = 20.0  # a running job stops within 15 s (at its next progress point): then the command says how
PUBLISHED = ("publishing", "published")


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
    found = _running(settings, name)
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
    mine = settings.model_copy(update={"worker_id": f"cancel-{secrets.token_hex(4)}"})
    job = claim(mine, WorkStore(mine), candidate, before=lambda job: cancel_marker(job.dir, by))
    if job is None:
        return None
    said = cancelled(job.dir) or "cancelled"
    error = JobCancelledByOperator(said)
    fail(mine, job, JobFailure(stage=error.stage, error_class=type(error).__name__, message=said,
                               hint=error.hint))
    with contextlib.suppress(OSError):
        os.rmdir(mine.worker_dir)
    return Outcome(candidate.key, True, f"{candidate.key}: {said} (was queued; its files are in failed/)")


def _running(settings: Settings, name: str) -> tuple[Path, JobState] | None:
    for worker in worker_folders(settings):
        with contextlib.suppress(OSError):
            for entry in os.scandir(worker):
                if entry.name.startswith(TRASH_PREFIX) or not entry.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    state = JobState.read(Path(entry.path) / STATE_FILE, MAX_STATE_BYTES)
                    if state.key == name and state.stage != "failing":
                        return Path(entry.path), state
    return None


def _cancel_running(settings: Settings, name: str, folder: Path, state: JobState, *,
                    by: str | None) -> Outcome:
    if state.stage in PUBLISHED:
        return Outcome(name, False, f"{name}: too late, it is being published (on {folder.parent.name})")
    cancel_marker(folder, by)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        now = _where(settings, state.job_id)
        if now is None:
            return Outcome(name, True, f"{name}: cancelled (was running; its files are in failed/)")
        if now.stage in PUBLISHED:
            return Outcome(name, False, f"{name}: too late, it was being published when the cancel came")
        time.sleep(0.2)
    return Outcome(name, True, f"{name}: cancel requested; the worker {folder.parent.name} has not acted on "
                               f"it within {WAIT_S:g} s (it stops at its next progress point)")


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
        if not outcome.cancelled:
            code = max(code, 1)
    return code
