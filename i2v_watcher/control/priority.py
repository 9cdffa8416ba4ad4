"""A queued job's priority changed by an operator (`i2v-watcher priority NAME N`) without touching its
sidecar: work/.control/priority/<hash of NAME>.json holds the name and the new priority. The inbox's
order (inbox.watch) reads these at every scan in place of the sidecar's `priority`, so the job keeps
its arrival, and its place among jobs of equal priority. The worker that claims the job removes its
override, so a job dropped later under the same name starts from its own sidecar again."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.pause import control_dir, who
from i2v_watcher.fs.atomic import read_json, write_json_atomic
from i2v_watcher.job.records import utc_now

MAX_OVERRIDE_BYTES = 16 * 1024
MAX_OVERRIDES = 10_000  # read at every scan: a folder past this is not read further


def _folder(settings: Settings) -> Path:
    return control_dir(settings) / "priority"


def _path(settings: Settings, key: str) -> Path:
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]  # any name, any length
    return _folder(settings) / f"{digest}.json"


def set_priority(settings: Settings, key: str, priority: int, by: str | None = None) -> None:
    _folder(settings).mkdir(parents=True, exist_ok=True)
    write_json_atomic(_path(settings, key), {"key": key, "priority": priority, "by": by or who(),
                                             "at": utc_now()})


def forget_priority(settings: Settings, key: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_path(settings, key))


def priorities(settings: Settings) -> dict[str, int]:
    """Every override in force, by job name; an unreadable one is left out (the sidecar's counts)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), os.scandir(_folder(settings)) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_OVERRIDES:
                break
            with contextlib.suppress(OSError, ValueError):
                data = read_json(Path(entry.path), MAX_OVERRIDE_BYTES)
                key, priority = data.get("key"), data.get("priority")
                named = isinstance(key, str) and _path(settings, key).name == entry.name
                if named and isinstance(priority, int) and not isinstance(priority, bool):
                    found[str(key)] = priority
    return found
