"""Filesystem types from /proc/self/mountinfo: escapes, non-ASCII mount points, whole-component
prefixes, and a real tmpfs mounted at a hostile name."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2v_watcher.fs.mounts import (
    containing_mount,
    filesystem_type,
    is_network_fs,
    mount_of,
    mount_points,
    unescape_mountinfo,
)

CHINESE = "/srv/共享 盘"
EMOJI = "/mnt/📷 photos"


def escape(path: str) -> bytes:
    """A mount point as the kernel writes it: raw bytes, with space, tab, newline and backslash octal."""
    raw = path.encode()
    for char in b"\\ \t\n":  # the backslash first, so the escapes' own backslashes stay
        raw = raw.replace(bytes([char]), b"\\%03o" % char)
    return raw


def line(mount_id: int, mount_point: str, fstype: str, optional: str = "shared:1") -> bytes:
    fields = [str(mount_id).encode(), b"1", b"0:42", b"/", escape(mount_point), b"rw,relatime"]
    fields += [part.encode() for part in optional.split()]
    return b" ".join([*fields, b"-", fstype.encode(), b"source", b"rw"])


MOUNTINFO = b"\n".join([
    line(1, "/", "ext4"),
    line(2, "/proc", "proc", optional=""),
    line(3, "/mnt/a", "nfs4", optional="shared:2 master:3"),
    line(4, "/mnt/ab", "xfs"),
    line(5, CHINESE, "fuse.sshfs"),
    line(6, EMOJI, "cifs"),
    line(7, "/mnt/tab\there", "9p"),
    line(8, "/mnt/back\\slash", "ceph"),
    line(9, "/mnt/new\nline", "virtiofs"),
    line(10, "/mnt/a", "tmpfs"),  # stacked on /mnt/a: hides the nfs4 mount
]) + b"\n"


@pytest.fixture
def mountinfo(tmp_path: Path) -> str:
    path = tmp_path / "mountinfo"
    path.write_bytes(MOUNTINFO)
    return str(path)


@pytest.mark.parametrize("escaped,raw", [
    (b"/mnt/my\\040share", b"/mnt/my share"),
    (b"/mnt/tab\\011x", b"/mnt/tab\tx"),
    (b"/mnt/nl\\012x", b"/mnt/nl\nx"),
    (b"/mnt/back\\134slash", b"/mnt/back\\slash"),
    (b"/mnt/back\\134040", b"/mnt/back\\040"),  # an escaped backslash does not start a new escape
    ("/srv/共享\\040盘".encode(), "/srv/共享 盘".encode()),  # UTF-8 bytes pass through untouched
    (b"/mnt/\xff\xfe", b"/mnt/\xff\xfe"),  # so do bytes that are not UTF-8
    (b"/plain", b"/plain"),
])
def test_unescape_is_byte_exact(escaped: bytes, raw: bytes) -> None:
    assert unescape_mountinfo(escaped) == raw


def test_mount_points_are_decoded_exactly() -> None:
    assert mount_points(MOUNTINFO) == [
        (b"/", "ext4"), (b"/proc", "proc"), (b"/mnt/a", "nfs4"), (b"/mnt/ab", "xfs"),
        (CHINESE.encode(), "fuse.sshfs"), (EMOJI.encode(), "cifs"), (b"/mnt/tab\there", "9p"),
        (b"/mnt/back\\slash", "ceph"), (b"/mnt/new\nline", "virtiofs"), (b"/mnt/a", "tmpfs"),
    ]


def test_malformed_lines_are_skipped() -> None:
    text = b"garbage\n1 2 3 4 /x rw - \n1 2 3 4 /y rw no-separator here\n" + line(1, "/z", "xfs")
    assert mount_points(text) == [(b"/z", "xfs")]


@pytest.mark.parametrize("path,fstype", [
    ("/", "ext4"),
    ("/home/user", "ext4"),
    ("/proc/self", "proc"),
    (CHINESE, "fuse.sshfs"),
    (f"{CHINESE}/inbox/图片", "fuse.sshfs"),
    ("/srv/共享", "ext4"),  # a string prefix of the mount point, not inside it
    (f"{EMOJI}/inbox", "cifs"),
    ("/mnt/tab\there/x", "9p"),
    ("/mnt/back\\slash/x", "ceph"),
    ("/mnt/new\nline/x", "virtiofs"),
    ("/mnt/ab/x", "xfs"),  # /mnt/a is a string prefix of /mnt/ab, not a path prefix
    ("/mnt/abc", "ext4"),
    ("/mnt/a/x", "tmpfs"),  # of two mounts on one point, the later (on top) wins
])
def test_the_longest_whole_component_prefix_wins(path: str, fstype: str) -> None:
    found = containing_mount(path.encode(), mount_points(MOUNTINFO))
    assert found is not None and found[1] == fstype


def test_filesystem_type_reads_the_given_mountinfo(mountinfo: str) -> None:
    assert filesystem_type(Path(CHINESE) / "inbox", mountinfo) == "fuse.sshfs"
    assert is_network_fs(filesystem_type(Path(CHINESE) / "inbox", mountinfo))
    assert mount_of(Path("/mnt/ab/x"), mountinfo) == (b"/mnt/ab", "xfs")


def test_unknown_when_nothing_matches_or_unreadable(tmp_path: Path) -> None:
    only = tmp_path / "only"
    only.write_bytes(line(1, "/elsewhere", "ext4") + b"\n")
    assert filesystem_type(Path("/srv"), str(only)) == ""
    assert filesystem_type(Path("/srv"), str(tmp_path / "missing")) == ""


def test_symbolic_links_are_resolved(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    info = tmp_path / "mountinfo"
    info.write_bytes(line(1, "/", "ext4") + b"\n" + line(2, os.path.realpath(target), "nfs") + b"\n")
    assert filesystem_type(tmp_path / "link" / "inbox", str(info)) == "nfs"


def test_network_filesystems() -> None:
    for network in ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuse", "fuseblk", "9p", "virtiofs"):
        assert is_network_fs(network), network
    for local in ("ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "proc", ""):
        assert not is_network_fs(local), local


def test_this_process_mountinfo() -> None:
    assert filesystem_type(Path("/proc/self")) == "proc"


@pytest.fixture
def tmpfs_at_hostile_name(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs mounted at a name with CJK, emoji, a space, a tab and a backslash."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the tests run as root in CI)")
    point = tmp_path / "共享 share\t\\📷"
    point.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)],
                                capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {result.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def test_a_real_mount_at_a_non_ascii_path(tmpfs_at_hostile_name: Path) -> None:
    point = tmpfs_at_hostile_name
    inside = point / "inbox"
    inside.mkdir()
    # tmp_path may itself be a tmpfs, so the type alone proves little: the mount found must be ours.
    assert mount_of(inside) == (os.fsencode(os.path.realpath(point)), "tmpfs")
    assert filesystem_type(inside) == "tmpfs"
    parent = mount_of(point.parent)
    assert parent is not None and parent[0] != os.fsencode(os.path.realpath(point))
