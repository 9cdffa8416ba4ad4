"""Pause, resume and drain, as files on the share: work/.control/pause-all pauses every worker,
work/.control/pause-<worker_id> one. A file is the whole state, so a pause holds across restarts and
hosts until `resume` removes it; it says who wrote it and when (shown by `status`, never trusted).

A worker reads the files before every claim (Gate.claims_allowed, a stat or two per loop turn) and
says "paused" in its heartbeat once it has seen one; since claims and that check happen in the same
thread, a heartbeat that says paused means no claim is under way and none will start (what `pause`
waits for before it returns).

Drain is a pause that carries a token: a worker running when a drain token appears exits once idle.
A worker started later (after the reboot the drain was for) finds the token already there at its
start and stays merely paused, so the pause still holds until `resume`."""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import socket
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict

from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import read_json, write_json_atomic
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.records import utc_now

CONTROL_DIR = ".control"  # hidden: never taken for a worker's folder (work.lease.worker_folders)
ALL = "all"
MAX_PAUSE_BYTES = 64 * 1024
log = structlog.get_logger("i2v_watcher.control.pause")


class PauseRecord(BaseModel):
    """work/.control/pause-<all|worker_id>: who paused, when, and whether it drains."""

    model_config = ConfigDict(extra="allow")

    by: str | None = None
    host: str | None = None
    at: str | None = None
    drain: str | None = None  # a drain's token (see the module's docstring); None for a plain pause


def control_dir(settings: Settings) -> Path:
    return settings.work / CONTROL_DIR


def pause_file(settings: Settings, worker: str | None) -> Path:
    return control_dir(settings) / f"pause-{worker or ALL}"


def who() -> str:
    """The person at the controls: the login name (getpass reads the environment, then pwd)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def pause(settings: Settings, worker: str | None = None, *, drain: bool = False,
          by: str | None = None) -> Path:
    """Write the pause (a drain: with a new token); a second pause replaces the first. `by`: who
    pauses (default: this login; the dashboard names its signed-in session)."""
    folder = control_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)  # a share paused before its first worker ever started
    record = PauseRecord(by=by or who(), host=socket.gethostname(), at=utc_now(),
                         drain=secrets.token_hex(8) if drain else None)
    path = pause_file(settings, worker)
    write_json_atomic(path, record.model_dump(mode="json"))
    return path


def resume(settings: Settings, worker: str | None = None) -> bool:
    """Remove the pause; False when there was none."""
    try:
        os.unlink(pause_file(settings, worker))
    except FileNotFoundError:
        return False
    return True


def read_pause(path: Path) -> PauseRecord | None:
    """The pause a file holds; a file that cannot be parsed still pauses (it was written to)."""
    try:
        return PauseRecord.model_validate(read_json(path, MAX_PAUSE_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return PauseRecord() if os.path.lexists(path) else None


def pauses(settings: Settings) -> dict[str, PauseRecord]:
    """Every pause in force on the share, by whom it pauses ("all" or a worker id)."""
    found: dict[str, PauseRecord] = {}
    with contextlib.suppress(OSError):
        for path in sorted(control_dir(settings).glob("pause-*")):
            record = read_pause(path)
            if record is not None:
                found[path.name.removeprefix("pause-")] = record
    return found


class Gate:
    """A worker's view of the pauses that concern it (its own and the share's)."""

    def __init__(self, settings: Settings) -> None:
        self.worker_id = settings.worker_id
        self.files = (pause_file(settings, None), pause_file(settings, settings.worker_id))
        # Drains already there at start-up are not for this run (see the module's docstring).
        self._old_drains = {r.drain for r in self._records() if r.drain}
        self.paused = False
        self.draining = False

    def _records(self) -> list[PauseRecord]:
        return [r for r in map(read_pause, self.files) if r is not None]

    def in_force(self) -> PauseRecord | None:
        """The pause that holds this worker (its own first), for saying who paused it and when."""
        found = (r for r in map(read_pause, reversed(self.files)) if r is not None)
        return next(found, None) if self.paused else None

    def claims_allowed(self) -> bool:
        """Read the pauses now; True when this worker may claim a job."""
        if not any(os.path.lexists(path) for path in self.files):  # the usual case: two stats
            self.paused = self.draining = False
            return True
        records = self._records()
        self.paused = bool(records)
        self.draining = any(r.drain and r.drain not in self._old_drains for r in records)
        return not self.paused

    def check(self, activity: Activity) -> bool:
        """claims_allowed(), said: in the activity (the heartbeat's "paused", systemd's STATUS) and, once
        per change, in the log. Every service that claims (the daemon's intake, a Celery worker's
        consumer) checks here before each claim and while idle, from the thread that claims."""
        allowed = self.claims_allowed()
        if activity.paused != (not allowed):
            if allowed:
                log.warning("resumed: claiming again", worker_id=self.worker_id)
            else:  # said once per pause: who paused, when, and what ends it (`run --once` waits too)
                held = self.in_force()
                log.warning("paused by an operator: claiming nothing", worker_id=self.worker_id,
                            draining=self.draining, paused_by=held and held.by, since=held and held.at,
                            until="`i2v-watcher resume`" + (" (this worker exits once idle)"
                                                            if self.draining else ""))
        activity.paused, activity.draining = not allowed, self.draining
        return allowed


def say_drained() -> None:
    """A drained worker's last word before it exits (the daemon's loop, a Celery worker's tick)."""
    log.warning("drained: every job of this worker is finished, exiting (the pause stays until "
                "`i2v-watcher resume`)")


def pause_line(whom: str, record: dict[str, object]) -> str:
    """A pause in force, in words (`status`)."""
    what = "draining" if record.get("drain") else "paused"
    target = "every worker" if whom == ALL else f"worker {whom}"
    by = " ".join(f"{word} {record[key]}" for word, key in (("by", "by"), ("on", "host"), ("at", "at"))
                  if record.get(key))
    return f"{what}: {target}" + (f" ({by})" if by else "") + "; `i2v-watcher resume` ends it"
