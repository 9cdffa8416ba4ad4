"""What the scans skip below the inbox, told once: a sub-folder that cannot be read, an entry that
cannot be looked at, a subtree past the bounds (nested too deep, a path too long: see bounds). One log
line when a path starts being skipped (or is skipped for another reason), one when it is back. The rest
of the inbox is served meanwhile. A tree that makes many such paths at once is told in TOLD lines and a
count, in the log as in `status` and on the dashboard."""

from __future__ import annotations

import structlog

from i2v_watcher.inbox.bounds import BOUND_REASONS, shorten

TOLD = 20  # paths named one by one, in one scan's log lines or in one listing of warnings
UNREADABLE = "a folder in the inbox cannot be read; skipped, the rest is served"
BEYOND = "a folder in the inbox is nested too deep or its path is too long; skipped, the rest is served"
BACK = "a folder in the inbox can be read again"
log = structlog.get_logger("i2v_watcher.inbox.watch")


class Skipped:
    def __init__(self) -> None:
        self.paths: dict[str, str] = {}  # path → why it is skipped

    def update(self, errors: dict[str, str]) -> None:
        """The paths the last scan skipped, and why: the changes since the scan before are logged."""
        if errors == self.paths:
            return
        new = [(path, why) for path, why in errors.items() if self.paths.get(path) != why]
        for path, why in new[:TOLD]:
            log.error(BEYOND if why in BOUND_REASONS else UNREADABLE, folder=shorten(path), reason=why)
        back = sorted(self.paths.keys() - errors.keys())
        for path in back[:TOLD]:
            log.warning(BACK, folder=shorten(path))
        if len(new) > TOLD or len(back) > TOLD:
            log.error("more paths in the inbox are skipped or back than are named here",
                      skipped_not_named=max(0, len(new) - TOLD), back_not_named=max(0, len(back) - TOLD),
                      skipped=len(errors))
        self.paths = dict(errors)

    def warnings(self) -> list[str]:
        """One line per skipped path, for a person (at most TOLD of them, then a count)."""
        lines = [f"skipped {'the folder' if why in BOUND_REASONS else 'the unreadable folder'} "
                 f"{shorten(path)}: {why}" for path, why in sorted(self.paths.items())[:TOLD]]
        if len(self.paths) > TOLD:
            lines.append(f"and {len(self.paths) - TOLD} more skipped paths in the inbox")
        return lines
