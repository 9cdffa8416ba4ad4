"""A job's folder in failed/ or done/ when something that is not a folder already has its name there:
a user's file, link or FIFO, or an earlier job's input such as a suffix-less file `projX` next to the
folder `projX/` that a later job needs. The job then takes the same path with that one component as
`<name>-1`, `<name>-2`…, and its report says so: a job never waits for a folder it can never have."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from i2v_watcher.fs.atomic import NAME_MAX, FolderBlocked, kind_of, safe_subdir

MAX_DETOURS = 99  # then `<name>-<job id>`, a name no one can plant ahead


def blocked_part(root: Path, rel: PurePosixPath) -> tuple[PurePosixPath, str] | None:
    """The first component of root/rel that exists and is not a folder (relative to root), and what it
    is; None when each one is a folder or still missing (then it can be made)."""
    path = PurePosixPath()
    for part in rel.parts:
        path = path / part
        try:
            mode = os.lstat(root / path).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return path, kind_of(mode)
    return None


def detour_name(part: str, tag: str) -> str:
    """`<part>-<tag>`, the part shortened where the whole would not fit a file name."""
    tail = f"-{tag}"
    while part and len(os.fsencode(part + tail)) > NAME_MAX:
        part = part[:-1]
    return part + tail


def is_detour(part: str, used: str) -> bool:
    """Whether `used` is `part` itself or a detour of it (detour_name with any tag)."""
    return used == part or any(detour_name(part, used[i + 1:]) == used
                               for i, char in enumerate(used) if char == "-" and i + 1 < len(used))


def _names(part: str, last: str) -> list[str]:
    """The names a component is tried under, in order."""
    return [part, *(detour_name(part, str(n)) for n in range(1, MAX_DETOURS + 1)), detour_name(part, last)]


def existing_detour(root: Path, rel: PurePosixPath) -> PurePosixPath | None:
    """The folder below root that detour_subdir gives rel now, where it exists already (None where it
    would still have to be made: nothing can be in it). Makes nothing; the `<name>-<job id>` of the
    last resort is not looked for."""
    used = PurePosixPath()
    for part in rel.parts:
        for name in _names(part, "")[:-1]:
            try:
                mode = os.lstat(root / used / name).st_mode
            except FileNotFoundError:
                return None
            if stat.S_ISDIR(mode):
                used = used / name
                break
        else:
            return None
    return used


def detour_subdir(root: Path, rel: PurePosixPath, last: str) -> PurePosixPath:
    """root/rel made as safe_subdir makes it; a component blocked by something that is not a folder is
    taken as `<name>-1` … `<name>-99`, then `<name>-<last>` (the job's id), whichever is or can be made a
    folder. The path used, relative to root (rel itself unless something was in the way)."""
    used = PurePosixPath()
    for part in rel.parts:
        blocked: FolderBlocked | None = None
        for name in _names(part, last):
            try:
                safe_subdir(root, used / name)
            except FolderBlocked as exc:
                blocked = blocked or exc
                continue
            used = used / name
            break
        else:
            assert blocked is not None
            raise blocked
    return used
