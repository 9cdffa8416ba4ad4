"""`retry`: put a failed job's files back into the inbox, where its report says they came from. Only
what a report names that checks out as this job's own files is moved, into the inbox sub-folder
matching the report's own place in failed/ (or the one its `input` names, where that place is a detour of
it: failed/ had a file under the folder's name, fs.detours)."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import NAME_MAX, kind_of, move, safe_subdir
from i2v_watcher.fs.detours import is_detour
from i2v_watcher.fs.reservations import release_name, reserve_name
from i2v_watcher.inbox.drop import clash_suffixes, new_owner
from i2v_watcher.inbox.watch import IMAGE_SUFFIXES
from i2v_watcher.job.records import FailureReport
from i2v_watcher.ops.reading import UNREADABLE, reason
from i2v_watcher.ops.reports import MAX_REPORT_BYTES
from i2v_watcher.run.fail import REPORT_SUFFIX


class RetryRefused(Exception):
    """A failed job's report that cannot be trusted; the report and the job's files stay in failed/."""


@dataclass(frozen=True)
class _RetryFiles:
    """A checked report: what to move from where, under which name."""

    source: Path  # the report's folder in failed/
    rel: PurePosixPath  # the job's folder relative to the inbox: that folder's place in failed/, or the
    # one it is a detour of (fs.detours)
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


def _input_parts(value: object) -> list[str]:
    """The report's `input` as its components, the job's original name last. Its folder part is used
    only where the report's own place in failed/ is a detour of it (fs.detours), but an `input` that
    tries to point elsewhere marks the report as tampered with."""
    if not isinstance(value, str):
        raise RetryRefused(f"input {value!r} must be a string")
    if value.startswith("/"):
        raise RetryRefused(f"input {value!r} is an absolute path")
    parts = value.split("/")
    for part in parts:
        _plain_name(part, f"input {value!r}: component")
    return parts


def _inbox_folder(rel: PurePosixPath, wanted: list[str]) -> PurePosixPath:
    """The job's folder in the inbox: the report's folder in failed/, or the folder its `input` names
    where the report went to a detour of it (`projX-1/` because a file `projX` was in failed/)."""
    if len(wanted) == len(rel.parts) and all(map(is_detour, wanted, rel.parts)):
        return PurePosixPath(*wanted)
    return rel


def _check_present(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise RetryRefused(f"{path.name!r} is listed in the report but is not in {path.parent}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise RetryRefused(f"{path.name!r} is {kind_of(mode)}, not a file")


def _job_files(names: list[str] | None, source: Path, report_stem: str) -> list[tuple[str, str]]:
    """The report's `files`: each one of this job's own files (`<stem>.<…>`, as fail() names them) in
    the report's folder; sidecars first, so a job never shows up in the inbox without its sidecar."""
    if not names:
        raise RetryRefused("files must be a non-empty list of file names")
    for name in names:
        _plain_name(name, "files entry")
        if not name.startswith(f"{report_stem}.") or name == f"{report_stem}{REPORT_SUFFIX}":
            raise RetryRefused(f"files entry {name!r} is not one of this job's files ({report_stem}.*)")
        _check_present(source / name)
    pairs = [(name, name[len(report_stem):]) for name in dict.fromkeys(names)]
    return sorted(pairs, key=lambda pair: pair[1].lower().endswith(IMAGE_SUFFIXES))


def _checked_report(settings: Settings, report: Path) -> _RetryFiles:
    rel = _report_folder(settings, report)
    source = safe_subdir(settings.failed, rel)  # every component a real folder, not a planted link
    report_stem = report.name[: -len(REPORT_SUFFIX)]
    try:
        data = FailureReport.read(source / report.name, MAX_REPORT_BYTES)
    except UNREADABLE as exc:
        raise RetryRefused(f"cannot read the report: {reason(exc)}") from exc
    # A report without `input` is put back under its own name; one whose `input` is null, refused.
    parts = _input_parts(data.input) if "input" in data.model_fields_set else [*rel.parts, report_stem]
    return _RetryFiles(source, _inbox_folder(rel, parts[:-1]), parts[-1],
                       _job_files(data.files, source, report_stem))


def _move_all(checked: _RetryFiles, target: Path, stem: str) -> list[Path]:
    """Move every file or none: on a failure half-way the moved ones go back, so the report still
    describes the whole job."""
    moved: list[tuple[Path, Path]] = []
    try:
        for name, tail in checked.files:
            final = target / f"{stem}{tail}"
            move(checked.source / name, final)
            moved.append((checked.source / name, final))
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
    checked = _checked_report(settings, report)
    target = safe_subdir(settings.inbox, checked.rel)
    owner = new_owner("retry")
    stem = reserve_name(target, checked.stem, clash_suffixes(*(tail for _, tail in checked.files)), owner)
    try:
        moved = _move_all(checked, target, stem)
    finally:
        release_name(target, stem, owner)
    report.unlink()
    # Not a worker: a command's own log, so that it never appends to a running daemon's file.
    events.append(settings, "retried", writer=f"{settings.worker_id}.commands", name=checked.stem,
                  report=report.relative_to(settings.failed).as_posix(),
                  to=[path.relative_to(settings.inbox).as_posix() for path in moved])
    return moved


