"""The dashboard's "recent actions": what people at the controls did (cancel, pause, resume, drain,
priority), who and when, read from the event log's command logs (`<host's worker id>.commands.jsonl`
written by the CLI, `.web.jsonl` by a dashboard: ops.control.record). Only each log's tail is read,
and only when the file changed, so a refresh costs a stat per log."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from i2v_watcher.catalog.events import SUFFIX, logs, read_tail
from i2v_watcher.config.settings import Settings

WRITERS = (f".commands{SUFFIX}", f".web{SUFFIX}")
TAIL_BYTES = 64 * 1024  # per log: far more than the newest actions shown


def what(event: dict[str, Any]) -> str:
    """An action in words."""
    kind, name, target = event.get("kind"), event.get("name"), event.get("target")
    whom = "every worker" if target in (None, "all") else f"worker {target}"
    if kind == "priority":
        return f"set the priority of {name} to {event.get('priority')}"
    if kind == "paused":
        return f"{'drained' if event.get('drain') else 'paused'} {whom}"
    if kind == "resumed":
        return f"resumed {whom}"
    return f"{kind} {name}" if name else str(kind)


class RecentActions:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._read: dict[Path, tuple[tuple[int, int, int], list[dict[str, Any]]]] = {}

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` actions of every command log, newest first: {at, by, what, kind}."""
        found: list[dict[str, Any]] = []
        seen: dict[Path, tuple[tuple[int, int, int], list[dict[str, Any]]]] = {}
        for path in logs(self.settings):
            if not path.name.endswith(WRITERS):
                continue
            with contextlib.suppress(OSError):
                st = os.stat(path)
                version = (st.st_ino, st.st_size, st.st_mtime_ns)
                cached = self._read.get(path)
                seen[path] = cached if cached and cached[0] == version else (version, _tail(path))
                found += reversed(seen[path][1])  # newest first: ties in time (a second) keep it
        self._read = seen  # logs gone are forgotten
        found.sort(key=lambda e: str(e["at"]), reverse=True)
        return found[:limit]


def _tail(path: Path) -> list[dict[str, Any]]:
    """The actions among the log's last TAIL_BYTES (events with who did them)."""
    return [{"at": str(event.get("at", "")), "by": str(event["by"]), "kind": event["kind"],
             "what": what(event)} for event in read_tail(path, TAIL_BYTES) if event.get("by") is not None]
