"""structlog set-up: journal entries with one field per key under systemd (`journalctl -u i2v-watcher
JOB_ID=…` follows one job), JSON lines for files and pipes, readable colours on a terminal."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

# syslog priorities, as journalctl -p filters them
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
IDENTIFIER = "i2v-watcher"


def configure(level: str = "info", fmt: str = "auto") -> None:
    send = journal_sender() if fmt == "journal" or (fmt == "auto" and stderr_is_journal()) else None
    if send is not None:
        _configure_journal(level, send)
        return
    json_lines = fmt in ("json", "journal") or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,  # the job id and name bound around each job
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exc_info = structlog.processors.format_exc_info if json_lines else structlog.dev.set_exc_info
    # Libraries that log through the standard library (watchdog, later diffusers) share the format.
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc_info, renderer]))
    _route_stdlib(handler)
    structlog.configure(
        processors=[*shared, exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is logged (like the structlog side above): an
    embedding program or a test harness may swap it after configure()."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def stderr_is_journal() -> bool:
    """systemd connected stderr to the journal (JOURNAL_STREAM names its device and inode); not when
    stderr was redirected elsewhere, e.g. `i2v-watcher run … 2>file` inside a unit."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


def journal_sender() -> Callable[..., Any] | None:
    """systemd-python's `journal.send`, or None without the systemd extra (JSON lines then)."""
    try:
        from systemd import journal
    except ImportError:
        return None
    send: Callable[..., Any] = journal.send
    return send


def journal_field(key: str) -> str:
    """A journal field name: upper case letters, digits and _, not starting with _ or a digit."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    return name if name and not name[0].isdigit() else f"F_{name}"


def journal_fields(_: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, str]:
    """One journal entry: MESSAGE reads like a log line; each key is also its own field (JOB_ID, JOB,
    STAGE, WORKER_ID, …) for `journalctl FIELD=value`."""
    level = str(event.pop("level", method))
    message = str(event.pop("event", ""))
    fields = {"PRIORITY": str(PRIORITIES.get(level, 6)), "SYSLOG_IDENTIFIER": IDENTIFIER}
    shown = []
    for key, value in event.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        fields[journal_field(key)] = text
        shown.append(f"{key}={text}" if key != "exception" else "\n" + text)
    fields["MESSAGE"] = " ".join([message, *shown])
    return fields


class JournalLogger:
    """structlog's last stop under systemd: the fields go to journald's socket."""

    def __init__(self, send: Callable[..., Any]) -> None:
        self._send = send

    def msg(self, **fields: str) -> None:
        with contextlib.suppress(OSError):  # journald restarting: the line is lost, the daemon goes on
            self._send(**fields)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _configure_journal(level: str, send: Callable[..., Any]) -> None:
    from systemd import journal

    handler = journal.JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    _route_stdlib(handler)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.format_exc_info, journal_fields],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *args: JournalLogger(send),
        cache_logger_on_first_use=False,
    )


def _route_stdlib(handler: logging.Handler) -> None:
    """Libraries that log through the standard library (watchdog, diffusers) go the same way."""
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("watchdog.observers.inotify").addFilter(_drop_shutdown_noise)


def _drop_shutdown_noise(record: logging.LogRecord) -> bool:
    # watchdog 7 reports its own orderly observer stop as an error; it is not one.
    return "called when the thread is inactive" not in record.getMessage()


class ProgressLog:
    """One progress line per `interval_s` at most (and the last one), so long jobs do not flood."""

    def __init__(self, what: str, interval_s: float) -> None:
        self.what = what
        self.interval_s = interval_s
        self._last = 0.0
        self._logged = (-1, -1)  # the last line logged: the end is logged once, however often reported
        self._log = structlog.get_logger("i2v_watcher.progress")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if (done >= total and (done, total) != self._logged) or now - self._last >= self.interval_s:
            self._last, self._logged = now, (done, total)
            self._log.info("progress", stage=self.what, done=done, total=total,
                           percent=round(100 * done / max(total, 1)))
