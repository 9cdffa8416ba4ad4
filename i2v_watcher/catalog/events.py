"""The event log: one append-only JSON-lines file per writer under `<work>/.events/`, a line for each
publish, failure, retry, takeover or cancel, so that a reader (the dashboard's index) learns what
changed by reading the lines it has not read yet, never by walking the outbox.

One writer per file (a worker, or a command run on a host under its own name), so no two processes ever
write the same file (O_APPEND is not atomic across NFS clients). Each line is written whole in one
`write()` and fsync'd: a torn last line (a crash mid-write) is only ever the file's last, and readers
skip what does not parse. Writing is best-effort: a log that cannot be written costs the readers a
reconciling walk, never the job its outcome, so `append` logs the problem and returns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.records import utc_now

log = structlog.get_logger("i2v_watcher.catalog.events")

EVENTS_DIR = ".events"  # under work/: hidden, so no worker takes it for a worker's folder
SUFFIX = ".jsonl"
# `path` (published, removed): a metadata file in the outbox, which the index reads again.
Kind = Literal["published", "removed", "failed", "retried", "takeover", "cancelled", "paused", "resumed",
               "priority"]
MAX_LINE_BYTES = 64 * 1024  # a longer line is someone else's file, not ours: skipped by readers


def events_dir(settings: Settings) -> Path:
    return settings.work / EVENTS_DIR


def log_path(settings: Settings, writer: str | None = None) -> Path:
    """The log of this worker, or of a command (`writer`: `<worker_id>.commands`) run on this host."""
    return events_dir(settings) / f"{writer or settings.worker_id}{SUFFIX}"


def append(settings: Settings, kind: Kind, *, writer: str | None = None, **fields: Any) -> bool:
    """Add one event to this writer's log: `{at, worker, kind, **fields}`. Never raises: whether the
    line was written (a reader that missed it catches up at its next reconciling walk)."""
    event = {"at": utc_now(), "worker": settings.worker_id, "kind": kind, **fields}
    path = log_path(settings, writer)
    try:
        line = (json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"an event of {len(line)} bytes (at most {MAX_LINE_BYTES})")
        path.parent.mkdir(exist_ok=True)  # the umask decides: every worker makes its own file here
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"only {written} of {len(line)} bytes written")
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, ValueError, TypeError) as exc:
        log.warning("could not write to the event log: readers catch up at their next walk",
                    event_kind=kind, log=str(path), error=str(exc))
        return False
    return True


@dataclass(frozen=True)
class Position:
    """Where a reader stopped in one log: the file (its inode: a log replaced by hand is read afresh)
    and the byte after the last whole line read."""

    inode: int
    offset: int


def logs(settings: Settings) -> list[Path]:
    """Every writer's log, in name order; none where the folder is missing or unreadable."""
    try:
        with os.scandir(events_dir(settings)) as entries:
            return sorted(Path(e.path) for e in entries
                          if e.name.endswith(SUFFIX) and e.is_file(follow_symlinks=False))
    except OSError:
        return []


def read_new(path: Path, since: Position | None) -> tuple[list[dict[str, Any]], Position | None]:
    """The whole lines written to `path` after `since`, as events, and where to read next time (None:
    the log is gone). A line that is not an event (torn, edited, too long) is skipped with a warning,
    and never read again; a last line without its newline yet is left for next time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return [], None
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(file.fileno())
        offset = since.offset if since is not None and since.inode == st.st_ino and \
            since.offset <= st.st_size else 0  # replaced or cut short: read it all again
        file.seek(offset)
        data = file.read(max(0, st.st_size - offset))
    whole = data.rfind(b"\n") + 1
    events = list(_parsed(path, data[:whole]))
    return events, Position(st.st_ino, offset + whole)


def read_tail(path: Path, size: int) -> list[dict[str, Any]]:
    """The events of the last `size` bytes of `path` (the line they cut into left out), oldest first;
    none where the log cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as file:
        end = os.fstat(file.fileno()).st_size
        start = max(0, end - size)
        file.seek(start)
        data = file.read(end - start)
    if start:
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    return list(_parsed(path, data[:data.rfind(b"\n") + 1]))


def _parsed(path: Path, data: bytes) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(data.splitlines()):
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError("too long")
            event = json.loads(raw)
            if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
                raise ValueError("not an event")
        except (ValueError, RecursionError) as exc:
            log.warning("skipped a line of the event log that is not an event", log=str(path),
                        line=number, error=str(exc)[:200])
            continue
        yield event
