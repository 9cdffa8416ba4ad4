"""The filesystem type of a path, from /proc/self/mountinfo: it decides inotify or polling.

Everything stays bytes until the type is known: mount points are arbitrary bytes (UTF-8 names,
or not UTF-8 at all), and the kernel escapes only space, tab, newline and backslash, as `\\ooo`
octal. Decoding the line as text first (and `unicode_escape` after) garbles every non-ASCII mount
point, so a FUSE share at a Chinese-named path was taken for its parent's ext4 and got inotify,
which is blind to what other hosts write into the share.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "sshfs", "9p", "afs", "ceph",
              "glusterfs", "lustre", "davfs", "gpfs", "beegfs", "ocfs2", "gfs2", "virtiofs", "vboxsf")
MOUNTINFO = "/proc/self/mountinfo"

# The kernel writes a mangled byte as a backslash and exactly three octal digits (at most \377).
_OCTAL_ESCAPE = re.compile(rb"\\([0-3][0-7]{2})")
# Fields before the optional ones: id, parent id, major:minor, root, mount point, mount options.
_MOUNT_POINT_FIELD = 4
_FIRST_OPTIONAL_FIELD = 6


def is_network_fs(fstype: str) -> bool:
    """Network and FUSE filesystems (sshfs, rclone, s3fs... all show as fuse.*): inotify cannot see
    changes made by other hosts there, so they are polled."""
    return fstype in NETWORK_FS or fstype.startswith("fuse")


def unescape_mountinfo(field: bytes) -> bytes:
    """Undo the kernel's octal escapes (`\\040` space, `\\011` tab, `\\012` newline, `\\134`
    backslash); every other byte, including UTF-8 sequences, is kept exactly."""
    return _OCTAL_ESCAPE.sub(lambda match: bytes([int(match.group(1), 8)]), field)


def _parse_line(line: bytes) -> tuple[bytes, str] | None:
    # Fields are separated by single spaces (a space inside a field is escaped), and a lone "-"
    # ends the variable-length list of optional fields; the filesystem type follows it.
    fields = line.split(b" ")
    try:
        separator = fields.index(b"-", _FIRST_OPTIONAL_FIELD)
    except ValueError:
        return None
    if separator + 1 >= len(fields) or not fields[separator + 1]:
        return None
    fstype = unescape_mountinfo(fields[separator + 1]).decode("utf-8", "replace")
    return unescape_mountinfo(fields[_MOUNT_POINT_FIELD]), fstype


def mount_points(mountinfo: bytes) -> list[tuple[bytes, str]]:
    """(mount point, filesystem type) for each well-formed line, in the file's order (a mount
    stacked on the same point comes later than the one it hides)."""
    parsed = (_parse_line(line) for line in mountinfo.split(b"\n") if line)
    return [entry for entry in parsed if entry is not None]


def _contains(mount_point: bytes, path: bytes) -> bool:
    # Whole components only: /mnt/a holds /mnt/a/x but not /mnt/ab.
    return path == mount_point or path.startswith(mount_point.rstrip(b"/") + b"/")


def containing_mount(path: bytes, mounts: list[tuple[bytes, str]]) -> tuple[bytes, str] | None:
    """The mount that holds the (real, absolute) path: the longest matching mount point, and of
    equal ones the last, which is the one on top."""
    best: tuple[bytes, str] | None = None
    for mount_point, fstype in mounts:
        if _contains(mount_point, path) and (best is None or len(mount_point) >= len(best[0])):
            best = (mount_point, fstype)
    return best


def mount_of(path: Path, mountinfo_path: str = MOUNTINFO) -> tuple[bytes, str] | None:
    """(mount point, filesystem type) of the mount holding path, symbolic links resolved; None
    when mountinfo cannot be read or lists no such mount."""
    try:
        with open(mountinfo_path, "rb") as handle:
            mountinfo = handle.read()
    except OSError:
        return None
    return containing_mount(os.fsencode(os.path.realpath(path)), mount_points(mountinfo))


def filesystem_type(path: Path, mountinfo_path: str = MOUNTINFO) -> str:
    """The type of the filesystem holding path ("ext4", "nfs4", "fuse.sshfs"...), '' when unknown."""
    found = mount_of(path, mountinfo_path)
    return "" if found is None else found[1]
