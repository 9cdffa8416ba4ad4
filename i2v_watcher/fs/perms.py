"""The group and permission bits of what the daemon publishes (`output_group`, `output_mode`), so the
whole team can read the outbox whatever the daemon's umask and primary group; whether this process can
write into a folder at all."""

from __future__ import annotations

import grp
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_GID = 2**32 - 2  # (gid_t)-1 means "leave the group alone" to chown


def parse_mode(text: str) -> int:
    """`"0640"` or `"640"` → 0o640. The owner (the daemon) must keep read and write: it reads a
    published file back when a job resumes, and it writes into the folders it made."""
    digits = text[1:] if len(text) == 4 and text.startswith("0") else text
    if len(digits) != 3 or any(char not in "01234567" for char in digits):
        raise ValueError(f"{text!r} is not an octal mode such as 0644 or 0640")
    mode = int(digits, 8)
    if mode & 0o600 != 0o600:
        raise ValueError(f"{text!r} must let the owner read and write (6 or 7 as the first digit): the "
                         "daemon reads published files back and writes into the folders it made")
    return mode


def folder_mode(mode: int) -> int:
    """A folder's mode from a file mode: x wherever r is set (0644 → 0755, 0640 → 0750)."""
    return mode | ((mode & 0o444) >> 2)


def resolve_group(text: str) -> int:
    """A group name (looked up on this host) or a number (taken as it is: a share's ids may have no
    name here)."""
    if text.isdigit():
        gid = int(text)
        if gid > MAX_GID:
            raise ValueError(f"group number {gid} is out of range (0 .. {MAX_GID})")
        return gid
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"there is no group named {text!r} on this host (see getent group); give an "
                         "existing name or a number") from None


@dataclass(frozen=True)
class OutputPerms:
    """What publishing applies to each file it writes and each folder it makes; None: leave it."""

    file_mode: int | None = None
    folder_mode: int | None = None
    gid: int | None = None


def output_perms(group: str | None, mode: str | None) -> OutputPerms:
    file_mode = None if mode is None else parse_mode(mode)
    return OutputPerms(file_mode=file_mode,
                       folder_mode=None if file_mode is None else folder_mode(file_mode),
                       gid=None if group is None else resolve_group(group))


def reach_mask(sources: Sequence[os.stat_result], gid: int) -> int:
    """The permission bits a file of group `gid` that this process owns may keep so that no one can
    read it who could not read every one of `sources` (the job's input files). Others keep what others
    had on every source. The group keeps what the sources' group had where the group is the same; a
    different group keeps only what both its and others' bits allowed, since its members were either.
    The owner (this process, which read the sources) keeps its bits; set-id and sticky bits go."""
    group, others = 0o070, 0o007
    for source in sources:
        mode = stat.S_IMODE(source.st_mode)
        others &= mode & 0o007
        group &= (mode & 0o070) if source.st_gid == gid else (mode & 0o070) & ((mode & 0o007) << 3)
    return 0o700 | group | others


def narrow_to(fd: int, sources: Sequence[os.stat_result]) -> None:
    """Take from an open file the permission bits that `sources` did not give (reach_mask); on the fd,
    so the name is never followed and the file can be narrowed before it is renamed into view."""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    narrowed = mode & reach_mask(sources, st.st_gid)
    if narrowed != mode:
        os.fchmod(fd, narrowed)


def write_problem(folder: Path) -> str | None:
    """Why the service's user cannot list this folder, or create and delete a file in it; None when it
    can. Tried for real: os.access trusts the modes, and misses read-only mounts and full disks."""
    probe = folder / f".i2v-probe-{os.getpid()}-{secrets.token_hex(4)}"  # hidden: a daemon ignores it
    what = "list it"
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
        what = "create a file in it"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        return f"uid {os.geteuid()} cannot {what}: {exc.strerror or exc}"
    return None
