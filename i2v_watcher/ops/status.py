"""`status` and `retry`: read (and for retry, move) the shared folders only, so both work from any host
and while a daemon runs.

Everything read there is untrusted: the folders are shared, so anyone who can write them can plant a
link, an unreadable folder or an edited report. Links are never followed, a bad state file or report is
shown as unreadable, and `retry` moves only what a report names that checks out as this job's own files,
into the inbox sub-folder matching the report's own place in failed/.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import (
    NAME_MAX,
    kind_of,
    move,
    read_json,
    release_name,
    reserve_name,
    safe_subdir,
    walk_files,
)
from i2v_watcher.inbox.watch import IMAGE_SUFFIXES, Inbox
from i2v_watcher.job.state import STATE_FILE, TRASH_PREFIX
from i2v_watcher.ops.submit import clash_suffixes, new_owner
from i2v_watcher.run.fail import REPORT_SUFFIX
from i2v_watcher.work.lease import survey

Warn = Callable[[str], None]
MAX_REPORT_BYTES = 1024 * 1024  # a report is a few kB, its traceback included
# What reading an untrusted JSON file can raise: missing, a link, too large, not JSON, nested too deep.
UNREADABLE = (OSError, ValueError, RecursionError)
STATE_FIELDS = ("job_id", "key", "worker_id", "stage")
DONE_SHOWN = 10  # the text lists this many of the latest done jobs; --json lists them all
# Each count and the folder it is read from: a folder that does not exist gives no count (null), not 0.
COUNTED = {"queued": "inbox", "in_progress": "work", "done": "outbox", "failed": "failed",
           "workers_alive": "work"}


class RetryRefused(Exception):
    """A failed job's report that cannot be trusted; the report and the job's files stay in failed/."""


def reason(exc: BaseException) -> str:
    """Why a file could not be used, in a person's words."""
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP and text == os.strerror(errno.ELOOP):
            text = "a symbolic link, never followed"  # what O_NOFOLLOW reports for a link
        return f"{exc.filename}: {text}" if exc.filename else text
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)


def printable(text: str) -> str:
    """Names and messages from the shared folders, safe for a terminal: control characters (an escape
    sequence in a file name) and undecodable bytes are shown escaped, never sent as they are."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 else c for c in text)


def warn(message: str) -> None:
    """A problem that does not stop the command, on stderr (stdout stays machine-readable)."""
    print(f"i2v-watcher: warning: {printable(message)}", file=sys.stderr)


def _folder_exists(what: str, root: Path, warn: Warn) -> bool:
    if root.is_dir():
        return True
    warn(f"the {what} folder {root} does not exist: is the share mounted? (or no daemon has created it yet)")
    return False


def _walk(what: str, root: Path, skip: Callable[[str], bool],
          warn: Warn) -> list[tuple[Path, os.stat_result]]:
    """The files below root, relative to it, with their lstat; unreadable sub-folders are skipped with
    a warning."""
    if not _folder_exists(what, root, warn):
        return []

    def unreadable(folder: Path, exc: OSError) -> None:
        warn(f"skipped the unreadable folder {folder}: {exc.strerror or exc}")

    try:
        return [(path.relative_to(root), st) for path, st in walk_files(root, skip, unreadable)]
    except OSError as exc:
        warn(f"cannot read the {what} folder: {reason(exc)}")
        return []


def _files(what: str, root: Path, skip: Callable[[str], bool], warn: Warn) -> list[Path]:
    return sorted(path for path, _ in _walk(what, root, skip, warn))


def _subfolders(folder: Path, warn: Warn) -> list[Path]:
    """Real sub-folders only: a link in a shared folder is never followed."""
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except OSError as exc:
        warn(f"skipped the unreadable folder {folder}: {exc.strerror or exc}")
        return []


def _state_files(work: Path, warn: Warn) -> list[Path]:
    """work/<worker_id>/<job_id>/job.json of every job, finished ones being deleted left out."""
    if not _folder_exists("work", work, warn):
        return []
    return [job / STATE_FILE for worker in _subfolders(work, warn) for job in _subfolders(worker, warn)
            if not job.name.startswith(TRASH_PREFIX) and os.path.lexists(job / STATE_FILE)]


def _job_entry(state_file: Path) -> dict[str, Any]:
    try:
        state = read_json(state_file)
        missing = [f for f in STATE_FIELDS if not isinstance(state.get(f), str)]
        if missing:
            raise ValueError(f"no {', '.join(missing)} in the job's state")
    except UNREADABLE as exc:
        return {"job_id": state_file.parent.name, "job": None, "worker_id": state_file.parent.parent.name,
                "stage": "unreadable", "claimed_at": None, "error": reason(exc)}
    return {"job_id": state["job_id"], "job": state["key"], "worker_id": state["worker_id"],
            "stage": state["stage"], "claimed_at": state.get("claimed_at")}


def _failed_entry(failed: Path, report: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": str(report)[: -len(REPORT_SUFFIX)]}  # as report_name() gives it
    try:
        data = read_json(failed / report, MAX_REPORT_BYTES)
    except UNREADABLE as exc:
        return {**entry, "stage": "unreadable", "message": reason(exc)}
    folder = PurePosixPath(*report.parent.parts)
    files = [str(folder / name) for name in _listed_files(failed / report)]
    return {**entry, **{key: data.get(key) for key in ("stage", "message", "hint", "input", "failed_at")},
            "files": files}


def jobs_in_progress(settings: Settings, warn: Warn) -> list[dict[str, Any]]:
    return [_job_entry(path) for path in _state_files(settings.work, warn)]


def failed_jobs(settings: Settings, warn: Warn) -> list[dict[str, Any]]:
    return [_failed_entry(settings.failed, report.relative_to(settings.failed))
            for report in failed_reports(settings, warn)]


def collect(settings: Settings) -> dict[str, Any]:
    """Counts and lists of jobs from the folders, and `warnings` for what could not be read."""
    warnings: list[str] = []
    skip = Inbox(settings).is_ignored
    queued = [str(p) for p in _files("inbox", settings.inbox, skip, warnings.append)
              if p.suffix.lower() in IMAGE_SUFFIXES]
    in_progress = jobs_in_progress(settings, warnings.append)
    # Done: published jobs, whose `<name>.json` metadata is written last; oldest first (publishing order).
    markers = [(st.st_mtime, path) for path, st in _walk("outbox", settings.outbox, skip, warnings.append)
               if path.suffix == ".json"]
    done = [str(path.with_suffix("")) for _, path in sorted(markers)]
    failed = failed_jobs(settings, warnings.append)
    workers = survey(settings) if settings.work.is_dir() else []
    counts: dict[str, int | None] = {
        "queued": len(queued), "in_progress": len(in_progress), "done": len(done), "failed": len(failed),
        "workers_alive": sum(w["state"] == "alive" for w in workers)}
    for key, folder in COUNTED.items():
        if not getattr(settings, folder).is_dir():
            counts[key] = None
    return {"counts": counts, "workers": workers, "queued": queued, "in_progress": in_progress, "done": done,
            "failed": failed, "warnings": warnings}


def missing_folders(settings: Settings) -> dict[str, Path]:
    """The folders `status` reads that do not exist."""
    return {name: getattr(settings, name) for name in dict.fromkeys(COUNTED.values())
            if not getattr(settings, name).is_dir()}


def _job_line(job: dict[str, Any]) -> str:
    if job["stage"] == "unreadable":
        return f"  {job['worker_id']}/{job['job_id']}  (unreadable: {job['error']})"
    return f"  {job['job']}  ({job['stage']} on {job['worker_id']}, {job['job_id']})"


def _worker_line(worker: dict[str, Any]) -> str:
    line = f"  {worker['worker_id']}  {worker['state']}"
    if worker.get("host"):
        line += f" on {worker['host']} (pid {worker.get('pid')}, {worker.get('backend') or '?'})"
    if worker.get("job") and worker["state"] == "alive":
        progress = f" {worker['done']}/{worker['total']}" if worker.get("total") else ""
        line += f": {worker['job']} [{worker.get('stage')}{progress}]"
    return line


def _count_line(key: str, label: str, count: int | None) -> str:
    if count is None:  # never a zero for a folder that is not there
        return f"{label:<12} ?  (the {COUNTED[key]} folder does not exist)"
    return f"{label:<12} {count}"


def render(status: dict[str, Any]) -> str:
    counts = status["counts"]
    lines = [_count_line(key, label, counts[key]) for key, label in
             (("queued", "queued"), ("in_progress", "in progress"), ("done", "done"), ("failed", "failed"))]
    if status["workers"]:
        lines += ["", "workers:"] + [_worker_line(w) for w in status["workers"]]
    if status["queued"]:
        lines += ["", "queued:"] + [f"  {name}" for name in status["queued"]]
    if status["in_progress"]:
        lines += ["", "in progress:"] + [_job_line(job) for job in status["in_progress"]]
    if status["done"]:
        done = status["done"]
        earlier = [f"  … {len(done) - DONE_SHOWN} earlier (`status --json` lists them all)"] \
            if len(done) > DONE_SHOWN else []
        lines += ["", "done (latest last):", *earlier] + [f"  {name}" for name in done[-DONE_SHOWN:]]
    if status["failed"]:
        lines += ["", "failed:"] + [f"  {f['name']}  [{f.get('stage')}] {f.get('message')}"
                                    for f in status["failed"]]
    return "\n".join(printable(line) for line in lines)


def failed_reports(settings: Settings, warn: Warn) -> list[Path]:
    return [settings.failed / p for p in _files("failed", settings.failed, Inbox(settings).is_ignored, warn)
            if p.name.endswith(REPORT_SUFFIX)]


def _listed_files(report: Path) -> list[str]:
    with contextlib.suppress(*UNREADABLE):
        files = read_json(report, MAX_REPORT_BYTES).get("files")
        if isinstance(files, list):
            return [name for name in files if isinstance(name, str)]
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
            or name in _listed_files(report)]


# retry


@dataclass(frozen=True)
class _Plan:
    """A checked report: what to move from where, under which name."""

    source: Path  # the report's folder in failed/
    rel: PurePosixPath  # that folder relative to failed/, which is the job's folder relative to the inbox
    stem: str  # the job's original name
    files: list[tuple[str, str]]  # (name in failed/, its tail after the stem), sidecars first


def _plain_name(value: object, what: str) -> str:
    """One file or folder name that can only mean a name inside its own folder."""
    if not isinstance(value, str) or not value:
        problem = "must be a non-empty string"
    elif "/" in value:
        problem = "must be a plain name, without '/'"
    elif value.startswith("."):
        problem = "must not start with '.' (no '.', '..' or hidden names)"
    elif any(ord(c) < 32 or ord(c) == 0x7F for c in value):
        problem = "must not contain NUL or control characters"
    else:
        try:
            too_long = len(os.fsencode(value)) > NAME_MAX
        except UnicodeEncodeError:
            problem = "is not a valid file name"
        else:
            if not too_long:
                return value
            problem = f"must be at most {NAME_MAX} bytes"
    raise RetryRefused(f"{what} {value!r} {problem}")


def _report_folder(settings: Settings, report: Path) -> PurePosixPath:
    try:
        rel = report.parent.relative_to(settings.failed)
    except ValueError:
        raise RetryRefused(f"the report is not in the failed folder {settings.failed}") from None
    for part in rel.parts:
        _plain_name(part, "sub-folder")
    return PurePosixPath(*rel.parts)


def _input_stem(value: object) -> str:
    """The job's original name: the last component of the report's `input`. Its folder part is not
    used (the report's own place in failed/ decides), but an `input` that tries to point elsewhere
    marks the report as tampered with."""
    if not isinstance(value, str):
        raise RetryRefused(f"input {value!r} must be a string")
    if value.startswith("/"):
        raise RetryRefused(f"input {value!r} is an absolute path")
    parts = value.split("/")
    for part in parts:
        _plain_name(part, f"input {value!r}: component")
    return parts[-1]


def _check_present(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise RetryRefused(f"{path.name!r} is listed in the report but is not in {path.parent}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise RetryRefused(f"{path.name!r} is {kind_of(mode)}, not a file")


def _job_files(data: dict[str, Any], source: Path, report_stem: str) -> list[tuple[str, str]]:
    """The report's `files`: each one of this job's own files (`<stem>.<…>`, as fail() names them) in
    the report's folder; sidecars first, so a job never shows up in the inbox without its sidecar."""
    names = data.get("files")
    if not isinstance(names, list) or not names:
        raise RetryRefused("files must be a non-empty list of file names")
    for name in names:
        _plain_name(name, "files entry")
        if not name.startswith(f"{report_stem}.") or name == f"{report_stem}{REPORT_SUFFIX}":
            raise RetryRefused(f"files entry {name!r} is not one of this job's files ({report_stem}.*)")
        _check_present(source / name)
    pairs = [(name, name[len(report_stem):]) for name in dict.fromkeys(names)]
    return sorted(pairs, key=lambda pair: pair[1].lower().endswith(IMAGE_SUFFIXES))


def _plan(settings: Settings, report: Path) -> _Plan:
    rel = _report_folder(settings, report)
    source = safe_subdir(settings.failed, rel)  # every component a real folder, not a planted link
    report_stem = report.name[: -len(REPORT_SUFFIX)]
    try:
        data = read_json(source / report.name, MAX_REPORT_BYTES)
    except UNREADABLE as exc:
        raise RetryRefused(f"cannot read the report: {reason(exc)}") from exc
    stem = _input_stem(data.get("input", report_stem))
    return _Plan(source, rel, stem, _job_files(data, source, report_stem))


def _move_all(plan: _Plan, target: Path, stem: str) -> list[Path]:
    """Move every file or none: on a failure half-way the moved ones go back, so the report still
    describes the whole job."""
    moved: list[tuple[Path, Path]] = []
    try:
        for name, tail in plan.files:
            final = target / f"{stem}{tail}"
            move(plan.source / name, final)
            moved.append((plan.source / name, final))
    except BaseException:
        for source, final in reversed(moved):
            with contextlib.suppress(OSError):  # the daemon may have claimed it meanwhile
                move(final, source)
        raise
    return [final for _, final in moved]


def retry(settings: Settings, report: Path) -> list[Path]:
    """Move a failed job's files back into the inbox under their original name (name-1… if taken
    meanwhile), the sidecar before the image; then drop the report. The new paths.
    RetryRefused (or OSError) when the report cannot be trusted or the inbox folder is not a real
    folder; then nothing has moved."""
    plan = _plan(settings, report)
    target = safe_subdir(settings.inbox, plan.rel)
    owner = new_owner("retry")
    stem = reserve_name(target, plan.stem, clash_suffixes(*(tail for _, tail in plan.files)), owner)
    try:
        moved = _move_all(plan, target, stem)
    finally:
        release_name(target, stem, owner)
    report.unlink()
    return moved
