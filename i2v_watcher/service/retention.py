"""Prune `done` and `failed` after `retention_days` (off by default), and drafts never approved after
`draft_expiry_days` (run.drafts).

Whose clock. A file's age counts from the moment it arrived there (its ctime, which the rename into
done/ or failed/ sets; its mtime when that is later), and both ends of that age are read on one clock:
the file server's. "Now" is the mtime of a probe file created in that folder at the time of the prune
(liveness.probe_share_time), never this host's clock: a host whose clock ran 45 days ahead (no RTC
battery, a VM restored from a snapshot, a bad time source) once pruned files that had just arrived.
Where no probe can be made (the folder is not writable), nothing is pruned there.

When. Never at start-up, when the host's clock may not be synchronised yet (the units also start
after time-sync.target): the first prune comes FIRST_PRUNE_S after the start, then every
RETENTION_EVERY_S. A daemon that never runs that long (`run --once`) never prunes.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.run.drafts import expire_drafts
from i2v_watcher.service.parts import Part
from i2v_watcher.work.liveness import probe_share_time

RETENTION_EVERY_S = 3600.0
FIRST_PRUNE_S = RETENTION_EVERY_S  # after the start: time enough for the host's clock to be synchronised
log = structlog.get_logger("i2v_watcher.service.retention")


def prune(settings: Settings) -> int:
    if settings.retention_days is None:
        return 0
    max_age_s = settings.retention_days * 86400
    removed = sum(prune_folder(root, max_age_s) for root in (settings.done, settings.failed))
    if removed:
        log.info("pruned old files", removed=removed, retention_days=settings.retention_days)
    return removed


def prune_folder(root: Path, max_age_s: float) -> int:
    """The files below `root` that arrived more than `max_age_s` ago on the clock of the server that
    holds `root`, removed; then the sub-folders left empty."""
    try:
        cutoff = probe_share_time(root) - max_age_s
    except OSError as exc:
        log.warning("cannot read the share's clock: nothing pruned there", folder=str(root),
                    error=exc.strerror or str(exc))
        return 0
    removed, failed = 0, 0
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
                if max(st.st_mtime, st.st_ctime) < cutoff:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
            except FileNotFoundError:
                continue  # removed meanwhile (another worker's retention)
            except OSError:
                failed += 1  # a name too long, a file of someone else's: the others are still pruned
        if Path(folder) != root:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only succeeds when empty
    if failed:
        log.warning("some old files could not be checked or removed", folder=str(root), files=failed)
    return removed


class Retention(Part):
    """Prunes FIRST_PRUNE_S after the start, then every RETENTION_EVERY_S while the service runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.at = time.monotonic() + FIRST_PRUNE_S

    def start(self) -> None:
        self.at = time.monotonic() + FIRST_PRUNE_S

    def tick(self) -> None:
        if time.monotonic() >= self.at:
            self.at = time.monotonic() + RETENTION_EVERY_S
            prune(self.settings)
            try:  # drafts never approved: their kept images go after draft_expiry_days (run.drafts)
                expire_drafts(self.settings)
            except OSError as exc:
                log.warning("cannot read the share's clock: no draft expired", error=exc.strerror or str(exc))

    def next_at(self) -> float:
        return self.at
