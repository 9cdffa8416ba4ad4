"""Prune `done` and `failed` after `retention_days` (off by default): the age counts from the moment a
file arrived there (its ctime, which a rename updates), not from the user's original mtime."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.service.parts import Part

RETENTION_EVERY_S = 3600.0
log = structlog.get_logger("i2v_watcher.service.retention")


def prune(settings: Settings) -> int:
    if settings.retention_days is None:
        return 0
    cutoff = time.time() - settings.retention_days * 86400
    removed = 0
    for root in (settings.done, settings.failed):
        for folder, _dirs, files in os.walk(root, topdown=False):
            for name in files:
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    st = path.lstat()
                    if max(st.st_mtime, st.st_ctime) < cutoff:
                        path.unlink()
                        removed += 1
            if Path(folder) != root:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only succeeds when empty
    if removed:
        log.info("pruned old files", removed=removed, retention_days=settings.retention_days)
    return removed


class Retention(Part):
    """Prunes at start-up and every RETENTION_EVERY_S while the service runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._last = time.monotonic()

    def start(self) -> None:
        prune(self.settings)
        self._last = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._last >= RETENTION_EVERY_S:
            self._last = time.monotonic()
            prune(self.settings)
