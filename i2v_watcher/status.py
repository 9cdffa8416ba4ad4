"""`status` and `retry`: read (and for retry, move) the shared folders only, so both work from any host
and while a daemon runs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from i2v_watcher.config import Settings
from i2v_watcher.fail import REPORT_SUFFIX
from i2v_watcher.fsutil import free_name, fsync_dir, move, read_json, walk_files
from i2v_watcher.job import STATE_FILE, TRASH_PREFIX
from i2v_watcher.watch import IMAGE_SUFFIXES, Inbox


def _files(root: Path, skip: Inbox) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(path.relative_to(root) for path, _ in walk_files(root, skip.is_ignored))


def collect(settings: Settings) -> dict[str, Any]:
    inbox = Inbox(settings)
    queued = [str(p) for p in _files(settings.inbox, inbox) if p.suffix.lower() in IMAGE_SUFFIXES]
    in_progress = []
    if settings.work.is_dir():
        for state_file in sorted(settings.work.glob(f"*/*/{STATE_FILE}")):
            if state_file.parent.name.startswith(TRASH_PREFIX):
                continue
            with contextlib.suppress(OSError, ValueError):
                state = read_json(state_file)
                in_progress.append({"job_id": state["job_id"], "job": state["key"],
                                    "worker_id": state["worker_id"], "stage": state["stage"],
                                    "claimed_at": state["claimed_at"]})
    done = [str(p.with_suffix("")) for p in _files(settings.outbox, inbox)
            if p.suffix == ".json"]
    failed = []
    for report in _files(settings.failed, inbox):
        if report.name.endswith(REPORT_SUFFIX):
            entry: dict[str, Any] = {"name": str(report)[: -len(REPORT_SUFFIX)]}
            with contextlib.suppress(OSError, ValueError):
                data = read_json(settings.failed / report)
                entry.update(stage=data.get("stage"), message=data.get("message"))
            failed.append(entry)
    return {
        "counts": {"queued": len(queued), "in_progress": len(in_progress), "done": len(done),
                   "failed": len(failed)},
        "queued": queued, "in_progress": in_progress, "done": done, "failed": failed,
    }


def render(status: dict[str, Any]) -> str:
    counts = status["counts"]
    lines = [f"{label:<12} {counts[key]}" for key, label in
             (("queued", "queued"), ("in_progress", "in progress"), ("done", "done"), ("failed", "failed"))]
    if status["queued"]:
        lines += ["", "queued:"] + [f"  {name}" for name in status["queued"]]
    if status["in_progress"]:
        lines += ["", "in progress:"] + [f"  {j['job']}  ({j['stage']} on {j['worker_id']}, {j['job_id']})"
                                         for j in status["in_progress"]]
    if status["failed"]:
        lines += ["", "failed:"] + [f"  {f['name']}  [{f.get('stage')}] {f.get('message')}"
                                    for f in status["failed"]]
    return "\n".join(lines)


def failed_reports(settings: Settings) -> list[Path]:
    return [settings.failed / p for p in _files(settings.failed, Inbox(settings))
            if p.name.endswith(REPORT_SUFFIX)]


def retry(settings: Settings, report: Path) -> list[Path]:
    """Move a failed job's files back into the inbox under their original names (a free name if one is
    taken meanwhile), the sidecar before the image; then drop the report. The new paths."""
    data = read_json(report)
    stem = report.name[: -len(REPORT_SUFFIX)]
    key = PurePosixPath(str(data.get("input") or stem))
    target = settings.inbox / key.parent
    target.mkdir(parents=True, exist_ok=True)
    names = [n for n in data.get("files", []) if os.path.lexists(report.parent / n)]
    tails = [n[len(stem):] if n.startswith(stem) else f".{n}" for n in names]
    new_stem = free_name(target, key.name, tails)
    order = sorted(zip(names, tails, strict=True), key=lambda nt: nt[1].lower().endswith(IMAGE_SUFFIXES))
    moved = []
    for name, tail in order:
        move(report.parent / name, target / f"{new_stem}{tail}")
        moved.append(target / f"{new_stem}{tail}")
    fsync_dir(target)
    report.unlink()
    return moved


def find_reports(settings: Settings, name: str) -> list[Path]:
    """Reports matching a name: the report's name with or without its folder, or an input file's name."""
    found = []
    for report in failed_reports(settings):
        stem = report.name[: -len(REPORT_SUFFIX)]
        rel = str(report.relative_to(settings.failed))[: -len(REPORT_SUFFIX)]
        with contextlib.suppress(OSError, ValueError):
            files = read_json(report).get("files", [])
            if name in (stem, rel, report.name) or name in files:
                found.append(report)
    return found
