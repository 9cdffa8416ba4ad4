"""systemd's view of the daemon (sd_notify, through systemd-python): `READY=1` once it can take jobs,
`EXTEND_TIMEOUT_USEC` before each long start-up step (a model load), `STATUS=` lines for `systemctl
status`, `WATCHDOG=1` only while the activity checkpoint is fresh, `STOPPING=1` once a stop is under way.

The watchdog is pinged from a thread, but never blindly: a daemon stuck in a CUDA call, an ffmpeg wait or
a deadlock stops passing progress points, the pings stop `max_silent_s` later, and systemd kills it
`WatchdogSec` after the last one (SIGABRT: with PYTHONFAULTHANDLER=1 every thread's stack goes to the
journal); the restarted daemon resumes the job from the work folder.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op. Under systemd without systemd-python the daemon
still runs, and says so once at start-up."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from i2v_watcher.job.checkpoint import Activity

STATUS_EVERY_S = 1.0  # how often the STATUS= line is refreshed (when it changed)
log = structlog.get_logger("i2v_watcher.service.systemd")


class _Send(Protocol):
    def __call__(self, status: str) -> object: ...


def _sd_notify() -> _Send | None:
    try:
        from systemd import daemon
    except ImportError:
        return None
    send: _Send = daemon.notify
    return send


def watchdog_seconds(environ: dict[str, str] | os._Environ[str] = os.environ) -> float | None:
    """systemd's WatchdogSec for this process (sd_watchdog_enabled, which systemd-python lacks): from
    WATCHDOG_USEC, unless WATCHDOG_PID names another process."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


def status_line(live: Activity, about: dict[str, str], max_silent_s: float) -> str:
    """What `systemctl status` shows: backend and model, queue, current job and its progress, totals."""
    parts = [" ".join(filter(None, (about.get("backend"), about.get("model") and f"({about['model']})")))]
    if live.queued is not None:
        parts.append(f"queue {live.queued}")
    for busy in live.busy():
        progress = f" {busy.done}/{busy.total}" if busy.total else ""
        parts.append(f"job {busy.job} [{busy.job_id}]: {busy.stage or 'starting'}{progress}")
    if live.draining:
        parts.append("DRAINING (claims nothing new, exits once its jobs are done)")
    elif live.paused:
        parts.append("PAUSED (claims nothing new; `i2v-watcher resume` ends it)")
    elif not live.busy():
        parts.append("idle")
    silent = live.silent_s()
    if silent >= max_silent_s:
        parts.append(f"NO PROGRESS for {silent:.0f} s (watchdog pings stopped)")
    parts.append(f"{live.published} published, {live.failed} failed since start")
    return "; ".join(p for p in parts if p)


class Notifier:
    def __init__(self, activity: Activity, max_silent_s: float) -> None:
        self.activity = activity
        self.max_silent_s = max_silent_s
        self.under_systemd = bool(os.environ.get("NOTIFY_SOCKET"))
        self._send = _sd_notify() if self.under_systemd else None
        self.watchdog_s = watchdog_seconds() if self._send else None
        self.about: dict[str, str] = {}
        self.stopping = False
        self._last_status = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-notify", daemon=True)

    @property
    def active(self) -> bool:
        return self._send is not None

    def explain(self) -> None:
        """Once, at start-up: under systemd without systemd-python nothing reaches systemd."""
        if self.under_systemd and self._send is None:
            log.warning("NOTIFY_SOCKET is set but systemd-python is not installed: no READY, STATUS or "
                        "watchdog pings reach systemd, and logs go to stderr as JSON lines, not as journal "
                        "fields (install the systemd extra: pip install 'i2v-watcher[systemd]')")

    def send(self, *fields: str) -> None:
        if self._send is not None:
            with contextlib.suppress(OSError):  # systemd gone (shutting down): nothing to tell
                self._send("\n".join(fields))

    def status(self, text: str) -> None:
        self._last_status = text
        self.send(f"STATUS={text}")

    def extend(self, seconds: float, doing: str) -> None:
        """Before a long start-up step: systemd waits `seconds` more (bounded, so a hung load still
        fails the start)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", f"STATUS={doing}")

    def ready(self) -> None:
        self.send("READY=1", f"STATUS={self._status()}", f"MAINPID={os.getpid()}")
        if self._send is not None:
            self._thread.start()

    def stop_requested(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.send("STOPPING=1", "STATUS=stopping: " + self._status())

    def failed(self, error: str) -> None:
        self.send(f"STATUS=cannot start: {error}")

    def close(self) -> None:
        self.stop_requested()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _status(self) -> str:
        return status_line(self.activity, self.about, self.max_silent_s)

    def _run(self) -> None:
        interval = STATUS_EVERY_S if self.watchdog_s is None else min(STATUS_EVERY_S, self.watchdog_s / 2)
        next_ping = 0.0
        while not self._stop.wait(interval):
            fields: list[str] = []
            now = time.monotonic()
            if self.watchdog_s is not None and now >= next_ping and self.activity.fresh(self.max_silent_s):
                next_ping = now + self.watchdog_s / 2
                fields.append("WATCHDOG=1")
            text = ("stopping: " if self.stopping else "") + self._status()
            if text != self._last_status:
                self._last_status = text
                fields.append(f"STATUS={text}")
            if fields:
                self.send(*fields)


Extend = Callable[[float, str], None]  # (seconds, what is being done): see Notifier.extend
