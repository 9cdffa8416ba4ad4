"""The failure reports in failed/ (`<name>.error.json`), read by `status`, `retry` and the dashboard:
found by name, listed with what each says. A report is untrusted: it may be edited or planted."""

from __future__ import annotations

import contextlib
from pathlib import Path, PurePosixPath
from typing import Any

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.records import MAX_RECORD_BYTES, FailureReport
from i2v_watcher.ops.reading import UNREADABLE, Warn, list_files, reason, walk_folder
from i2v_watcher.run.fail import REPORT_SUFFIX

MAX_REPORT_BYTES = MAX_RECORD_BYTES  # a report is a few kB, its traceback included


def _failed_entry(failed: Path, report: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": str(report)[: -len(REPORT_SUFFIX)]}  # as report_name() gives it
    try:
        data = FailureReport.read(failed / report, MAX_REPORT_BYTES)
    except UNREADABLE as exc:
        return {**entry, "stage": "unreadable", "message": reason(exc)}
    folder = PurePosixPath(*report.parent.parts)
    return {**entry, "stage": data.stage, "message": data.message, "hint": data.hint, "input": data.input,
            "failed_at": data.failed_at, "files": [str(folder / name) for name in data.files or ()]}


def failed_jobs(settings: Settings, warn: Warn, cache: ReportCache | None = None) -> list[dict[str, Any]]:
    return [entry for entry, _ in (cache or ReportCache()).read(settings, warn)]


class ReportCache:
    """The failed jobs, each report read once per version: a report is parsed again only when its
    identity (path, inode, size, mtime_ns) changed, so a dashboard that lists failed/ every half
    second reads a folder of thousands of reports once, then only its names."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def read(self, settings: Settings, warn: Warn) -> list[tuple[dict[str, Any], int]]:
        """Each report's entry and the report file's mtime (ns, the share's clock), sorted by name."""
        files = walk_folder("failed", settings.failed, Inbox(settings).is_ignored, warn)
        known: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        found = []
        for rel, st in sorted(files, key=lambda f: f[0]):
            if not rel.name.endswith(REPORT_SUFFIX):
                continue
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            seen = self._known.get(rel)
            known[rel] = seen if seen is not None and seen[0] == identity else \
                (identity, _failed_entry(settings.failed, rel))
            found.append((known[rel][1], st.st_mtime_ns))
        self._known = known
        return found


def failed_reports(settings: Settings, warn: Warn) -> list[Path]:
    names = list_files("failed", settings.failed, Inbox(settings).is_ignored, warn)
    return [settings.failed / p for p in names if p.name.endswith(REPORT_SUFFIX)]


def listed_files(report: Path) -> list[str]:
    with contextlib.suppress(*UNREADABLE):
        return FailureReport.read(report, MAX_REPORT_BYTES).files or []
    return []


def find_reports(settings: Settings, name: str, warn: Warn) -> list[Path]:
    """Reports matching a name: the report's name with or without its folder, or an input file's name.
    An unreadable report is still found by its own name, so that `retry` can say what is wrong."""
    return matching_reports(settings, failed_reports(settings, warn), name)


def report_name(settings: Settings, report: Path) -> str:
    """A failed job's name as `status` lists it: the report's path in failed/ without `.error.json`."""
    return str(report.relative_to(settings.failed))[: -len(REPORT_SUFFIX)]


def matching_reports(settings: Settings, reports: list[Path], name: str) -> list[Path]:
    return [report for report in reports
            if name in (report.name[: -len(REPORT_SUFFIX)], report_name(settings, report), report.name)
            or name in listed_files(report)]


