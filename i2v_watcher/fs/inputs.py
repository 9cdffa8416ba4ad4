"""A job's input file read once, through the descriptor that was checked: what the job decodes, parses
and records (its hash) are the same bytes, whatever happens to the file's name meanwhile.

A file with more than one name (a hard link) is not the job's alone: its content can change through
the other name while the job runs, and the other name may be a file the dropper could never read (a
private file of the service user, linked into the inbox where the share does not enforce
protected_hardlinks). Such a file is refused, or (`hardlinked_inputs = "copy"`) replaced in the job's
folder by a private copy of the bytes read, which is then all the job ever uses. Who owns the file
does not matter: the daemon cannot tell who made the link, and the service user's own files are
exactly what such a link would expose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from i2v_watcher.errors import JobError
from i2v_watcher.fs.atomic import open_nofollow, write_bytes_atomic

HardlinkRule = Literal["refuse", "copy"]


@dataclass(frozen=True)
class InputRead:
    """The bytes of an input file, read once."""

    data: bytes  # at most max_bytes + 1: one byte more tells that the file is too large
    size: int  # the file's size when it was opened
    copied: bool = False  # the job's folder now holds a private copy of `data` under the file's name


def read_input(path: Path, *, max_bytes: int, hardlinked: HardlinkRule, name: PurePosixPath | str,
               stage: str, token: str) -> InputRead:
    """The input at `path` (in the job's folder; `name` is what the report calls it), never through a
    link, at most max_bytes + 1 bytes. More than one name: a JobError (`stage`) under "refuse"; under
    "copy" the bytes read replace the name in the job's folder (a file of its own, written under a
    temporary name with `token`), unless the file is over max_bytes and the job fails anyway."""
    with open(path, "rb", opener=open_nofollow) as handle:
        found = os.fstat(handle.fileno())
        if found.st_nlink > 1 and hardlinked == "refuse":
            raise hardlinked_error(name, found.st_nlink, stage)
        data = handle.read(max_bytes + 1)
    if found.st_nlink == 1 or len(data) > max_bytes:
        return InputRead(data, found.st_size)
    write_bytes_atomic(path, data, token=token, replace=True, within=(found,))
    os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns), follow_symlinks=False)
    return InputRead(data, found.st_size, copied=True)


def hardlinked_error(name: PurePosixPath | str, links: int, stage: str) -> JobError:
    return JobError(
        f"{name} is a file with {links} names (a hard link): refused, because its content could change "
        "through another name while the job runs, and that name may be a file that is not yours to "
        "publish", stage=stage,
        hint="copy the file into the inbox (a plain copy or save, not ln, cp -l or rsync --link-dest) "
             "and retry; or ask the operator for hardlinked_inputs = \"copy\", which makes the daemon "
             "work from its own copy")
