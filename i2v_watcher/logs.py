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
# Bound for the whole run and said by the start-up lines (`watching`): a terminal does not repeat them.
CONSOLE_UNBOUND = frozenset({"worker_id"})
# Libraries that print on their own: a handler of their own on stderr, not propagating to the root.
LIBRARIES = ("transformers", "diffusers", "huggingface_hub", "accelerate", "torch", "uvicorn")


def configure(level: str = "info", fmt: str = "auto") -> None:
    send = journal_sender() if fmt == "journal" or (fmt == "auto" and stderr_is_journal()) else None
    if send is not None:
        _configure_journal(level, send)
        return
    json_lines = fmt in ("json", "journal") or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.typing.Processor]
    exc_info: structlog.typing.Processor
    if json_lines:
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
        shared = [structlog.contextvars.merge_contextvars,  # the job id and name bound around each job
                  structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
        exc_info = structlog.processors.format_exc_info
    else:  # for a person at a terminal: local time, colours only on a terminal, no worker id on each line
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        shared = [_merge_context_but(CONSOLE_UNBOUND), structlog.processors.add_log_level,
                  structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False)]
        exc_info = structlog.dev.set_exc_info
    # Libraries that log through the standard library (watchdog, transformers, diffusers, warnings.warn)
    # share the format: with JSON lines, every line on stderr is JSON.
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


def _merge_context_but(skip: frozenset[str]) -> structlog.typing.Processor:
    """structlog.contextvars.merge_contextvars without the keys in `skip`."""
    def merge(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in structlog.contextvars.get_contextvars().items():
            if key not in skip:
                event.setdefault(key, value)
        return event
    return merge


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
    """Libraries that log through the standard library (watchdog, diffusers) go the same way, and so
    do warnings.warn()'s warnings (logger `py.warnings`)."""
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("watchdog.observers.inotify").addFilter(_drop_shutdown_noise)
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """transformers, diffusers, huggingface_hub and torch give their loggers a handler of their own that
    prints plain text on stderr, and stop them propagating: those loggers go through the root's handler
    (ours) instead, and their progress bars are turned off (the daemon logs its own progress lines).
    Call it again after importing such a library: they set this up when they are imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # downloads, in this process and below
    for module in ("transformers.utils.logging", "diffusers.utils.logging", "huggingface_hub.utils"):
        library = sys.modules.get(module)
        for name in ("disable_default_handler", "enable_propagation", "disable_progress_bar",
                     "disable_progress_bars"):
            switch = getattr(library, name, None)
            if callable(switch):
                switch()
    streams = {sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__}
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.partition(".")[0] not in LIBRARIES:
            continue
        own = [h for h in logger.handlers if type(h) is logging.StreamHandler and h.stream in streams]
        for handler in own:
            logger.removeHandler(handler)
        if own:  # it printed on its own; a logger that was only kept quiet stays so
            logger.propagate = True


def _drop_shutdown_noise(record: logging.LogRecord) -> bool:
    # watchdog 7 reports its own orderly observer stop as an error; it is not one.
    return "called when the thread is inactive" not in record.getMessage()


class ProgressLog:
    """One progress line per `interval_s` at most (and the last one), so long jobs do not flood."""

    def __init__(self, what: str, interval_s: float, event: str = "progress") -> None:
        self.what = what
        self.event = event
        self.interval_s = interval_s
        self._last = 0.0
        self._logged = (-1, -1)  # the last line logged: the end is logged once, however often reported
        self._log = structlog.get_logger("i2v_watcher.progress")

    def __call__(self, done: int, total: int, *, last: bool = False, **more: Any) -> None:
        """`last`: the end, logged even when `done` falls short of `total`."""
        now = time.monotonic()
        end = done >= total or last
        if (end and (done, total) != self._logged) or now - self._last >= self.interval_s:
            self._last, self._logged = now, (done, total)
            self._log.info(self.event, stage=self.what, done=done, total=total,
                           percent=min(100, round(100 * done / max(total, 1))), **more)
