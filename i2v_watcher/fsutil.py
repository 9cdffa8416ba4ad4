"""Crash-safe file operations: every visible name appears complete, in one rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "sshfs", "9p", "afs", "ceph",
              "glusterfs", "lustre", "davfs", "gpfs", "beegfs", "ocfs2", "gfs2", "virtiofs", "vboxsf")


def open_nofollow(path: str, flags: int) -> int:
    """An `opener` for open(): a symbolic link put in a file's place is refused, never followed."""
    return os.open(path, flags | os.O_NOFOLLOW)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some network filesystems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    """`.clip.mp4.part`: hidden, and matched by no `*.mp4` glob of a consumer."""
    return final.with_name(f".{final.name}.part")


def write_bytes_atomic(final: Path, data: bytes) -> None:
    tmp = temp_name(final)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_json_atomic(final: Path, payload: dict[str, Any]) -> None:
    write_bytes_atomic(final, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def copy_atomic(source: Path, final: Path) -> None:
    """Copy under a temporary name, flush, then rename: works across filesystems."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())
    shutil.copystat(source, tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def move(source: Path, final: Path) -> None:
    """Rename where possible; across filesystems copy atomically, then remove the source."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_atomic(source, final)
        os.unlink(source)
    fsync_dir(final.parent)


def free_name(folder: Path, stem: str, suffixes: list[str]) -> str:
    """The first of stem, stem-1, stem-2… for which no `<stem><suffix>` exists in folder (no overwrite)."""
    for n in range(10_000):
        candidate = stem if n == 0 else f"{stem}-{n}"
        if not any(os.path.lexists(folder / f"{candidate}{suffix}") for suffix in suffixes):
            return candidate
    raise FileExistsError(f"no free name for {stem!r} in {folder}")


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding path, from /proc/self/mountinfo ('' when unknown)."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8",
                                            errors="replace") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) < 5 or not right:
                continue
            mount_point = fields[4].encode().decode("unicode_escape")
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, fstype = mount_point, right.split()[0]
    return fstype


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype.startswith("fuse")


def walk_files(root: Path, skip: Callable[[str], bool]) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file (and symbolic link) below root with its lstat; links are never followed and
    folders whose name `skip` accepts are not entered."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if skip(entry.name):
                    continue
                path = Path(entry.path)
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    yield path, st
