"""Names in a shared folder reserved before they are written: two workers, or two `submit`s, never
pick the same free name, and a resumed job takes its own reservation again."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from i2v_watcher.fs.atomic import fit_name, open_nofollow

RESERVED_SUFFIX = ".reserved"


def reservation(folder: Path, stem: str) -> Path:
    return folder / fit_name(stem, RESERVED_SUFFIX)


def reserve_name(folder: Path, stem: str, suffixes: list[str], owner: str) -> str:
    """The first of stem, stem-1, stem-2… that no `<stem><suffix>` in folder uses and that no other
    process has reserved, reserved for `owner` by an exclusive create (atomic on local disks and NFS),
    so two workers, or two `submit`s, never pick the same name. Taking it again as its owner works
    (a resumed job). Release it with release_name once the files are in place."""
    for n in range(10_000):
        candidate = stem if n == 0 else f"{stem}-{n}"
        if _in_use(folder, candidate, suffixes):
            continue
        marker = reservation(folder, candidate)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            if _reserved_by(marker) == owner:
                return candidate
            continue
        try:
            os.write(fd, owner.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        # Between the check and the create another process may have published the name unreserved.
        if _in_use(folder, candidate, suffixes):
            release_name(folder, candidate, owner)
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"no free name for {stem!r}", str(folder))


def release_own(folder: Path, stem: str, suffixes: list[str], owner: str) -> None:
    """Release the name that reserve_name gave `owner` for this stem, where it holds one, found by the
    same walk: it ends at the first name that is neither in use nor reserved."""
    for n in range(10_000):
        candidate = stem if n == 0 else f"{stem}-{n}"
        marker = reservation(folder, candidate)
        if _reserved_by(marker) == owner:
            release_name(folder, candidate, owner)
            return
        if not os.path.lexists(marker) and not _in_use(folder, candidate, suffixes):
            return


def _in_use(folder: Path, stem: str, suffixes: list[str]) -> bool:
    return any(os.path.lexists(folder / f"{stem}{suffix}") for suffix in suffixes)


def _reserved_by(marker: Path) -> str | None:
    try:
        with open(marker, "rb", opener=open_nofollow) as handle:
            return handle.read(256).decode("utf-8", "replace")
    except OSError:
        return None


def release_name(folder: Path, stem: str, owner: str) -> None:
    marker = reservation(folder, stem)
    if _reserved_by(marker) == owner:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
