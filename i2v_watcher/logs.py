"""structlog set-up: JSON lines for the journal and files, readable colours on a terminal."""

from __future__ import annotations

import logging
import sys
import time

import structlog


def configure(level: str = "info", fmt: str = "auto") -> None:
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("watchdog.observers.inotify").addFilter(_drop_shutdown_noise)
    structlog.configure(
        processors=[*shared, exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _drop_shutdown_noise(record: logging.LogRecord) -> bool:
    # watchdog 7 reports its own orderly observer stop as an error; it is not one.
    return "called when the thread is inactive" not in record.getMessage()


class ProgressLog:
    """One progress line per `interval_s` at most (and the last one), so long jobs do not flood."""

    def __init__(self, what: str, interval_s: float) -> None:
        self.what = what
        self.interval_s = interval_s
        self._last = 0.0
        self._log = structlog.get_logger("i2v_watcher.progress")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= self.interval_s:
            self._last = now
            self._log.info("progress", stage=self.what, done=done, total=total,
                           percent=round(100 * done / max(total, 1)))
