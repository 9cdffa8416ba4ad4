"""The file operations every promise rests on: nothing replaced, nothing opened that is not a regular
file, names that fit, reservations that only one process wins."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2v_watcher.fs import atomic as fsutil
from i2v_watcher.fs.atomic import (
    NAME_MAX,
    NotRegularFile,
    copy_atomic,
    move,
    open_nofollow,
    rename_noreplace,
    safe_subdir,
    temp_name,
    write_bytes_atomic,
)
from i2v_watcher.fs.reservations import release_name, reserve_name


@pytest.fixture(params=["renameat2", "link", "check"])
def rename_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each of rename_noreplace's ways: renameat2, a hard link (NFS), a check and a rename (no links)."""
    def unsupported(*args: object) -> None:
        raise OSError(errno.EINVAL, "not supported here")

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "no hard links here")

    if request.param != "renameat2":
        monkeypatch.setattr(fsutil, "_renameat2_noreplace", unsupported)
    if request.param == "check":
        monkeypatch.setattr(fsutil.os, "link", no_links)
    return str(request.param)


def test_rename_noreplace_never_replaces(tmp_path: Path, rename_path: str) -> None:
    (tmp_path / "a").write_text("mine")
    (tmp_path / "b").write_text("theirs")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "theirs" and (tmp_path / "a").read_text() == "mine"
    rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "mine" and not (tmp_path / "a").exists()


def test_a_link_is_renamed_as_a_link(tmp_path: Path, rename_path: str) -> None:
    (tmp_path / "target").write_text("secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    rename_noreplace(tmp_path / "link", tmp_path / "moved")
    assert (tmp_path / "moved").is_symlink() and os.readlink(tmp_path / "moved") == str(tmp_path / "target")


def test_writes_never_leave_a_partial_file_and_never_replace(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    final.write_text("someone else's")
    with pytest.raises(FileExistsError):
        write_bytes_atomic(final, b"ours", replace=False)
    assert final.read_text() == "someone else's" and os.listdir(tmp_path) == ["clip.mp4"]

    class Boom(Exception):
        pass

    def fail(handle: object) -> None:
        raise Boom

    with pytest.raises(Boom):
        fsutil._write_temp(tmp_path / "x.mp4", "tok", fail)
    assert os.listdir(tmp_path) == ["clip.mp4"]  # the temporary file is gone too


def test_temporary_names_are_hidden_unique_and_fit_the_filesystem(tmp_path: Path) -> None:
    short = temp_name(tmp_path / "clip.mp4")
    assert short.name.startswith(".clip.mp4.") and short.name.endswith(".part")
    assert short != temp_name(tmp_path / "clip.mp4")  # two writers never share one
    assert temp_name(tmp_path / "clip.mp4", "job1") == temp_name(tmp_path / "clip.mp4", "job1")
    longest = "写" * 83 + ".mp4"  # 253 bytes: fits, but not with a temporary prefix and suffix
    long = temp_name(tmp_path / longest, "20261125T045611Z-dd1331ea")
    assert len(os.fsencode(long.name)) <= NAME_MAX and long.name.startswith(".")
    write_bytes_atomic(tmp_path / longest, b"x", token="20261125T045611Z-dd1331ea")
    assert (tmp_path / longest).read_bytes() == b"x"


def test_only_regular_files_are_opened_and_a_fifo_never_blocks(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.png")
    (tmp_path / "real.png").write_bytes(b"data")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.png"))
    try:
        for name in ("x.png", "s.png", "link.png"):
            done = threading.Event()

            def attempt(path: Path = tmp_path / name, done: threading.Event = done) -> None:
                with pytest.raises(OSError):
                    open(path, "rb", opener=open_nofollow).close()
                done.set()

            threading.Thread(target=attempt, daemon=True).start()
            assert done.wait(5), f"opening {name} blocked"
    finally:
        sock.close()
    with open(tmp_path / "real.png", "rb", opener=open_nofollow) as handle:
        assert handle.read() == b"data"
    with pytest.raises(NotRegularFile):
        copy_atomic(tmp_path / "x.png", tmp_path / "copy.png")


def test_reservations_give_each_owner_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "photo.mp4").write_text("published before")
    first = reserve_name(tmp_path, "photo", [".mp4", ".json"], "job-a")
    second = reserve_name(tmp_path, "photo", [".mp4", ".json"], "job-b")
    assert (first, second) == ("photo-1", "photo-2")
    assert reserve_name(tmp_path, "photo", [".mp4", ".json"], "job-a") == "photo-1"  # resumed
    release_name(tmp_path, "photo-1", "job-b")  # not its reservation: nothing happens
    assert reserve_name(tmp_path, "photo", [".mp4"], "job-c") == "photo-3"
    release_name(tmp_path, "photo-1", "job-a")
    assert reserve_name(tmp_path, "photo", [".mp4"], "job-c") == "photo-1"


def test_safe_subdir_never_goes_through_a_link_or_creates_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "trip").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError) as caught:
        safe_subdir(root, "trip/day1")
    assert caught.value.errno == errno.ELOOP and not (tmp_path / "elsewhere" / "day1").exists()
    assert safe_subdir(root, "a/b") == root / "a" / "b" and (root / "a" / "b").is_dir()
    with pytest.raises(OSError):
        safe_subdir(root, "../escape")
    with pytest.raises(FileNotFoundError):
        safe_subdir(tmp_path / "unmounted-share", "x")
    assert not (tmp_path / "unmounted-share").exists()


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "other"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_across_filesystems_files_are_copied_and_special_files_stay(tmp_path: Path,
                                                                   other_filesystem: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"image")
    move(tmp_path / "a.png", other_filesystem / "a.png")
    assert (other_filesystem / "a.png").read_bytes() == b"image" and not (tmp_path / "a.png").exists()
    (tmp_path / "secret").write_text("root:x:0:0")
    (tmp_path / "p.png").symlink_to(tmp_path / "secret")
    os.mkfifo(tmp_path / "x.png")
    for name in ("p.png", "x.png"):
        with pytest.raises(NotRegularFile):
            move(tmp_path / name, other_filesystem / name)
        assert not os.path.lexists(other_filesystem / name)
    assert (tmp_path / "p.png").is_symlink() and stat.S_ISFIFO(os.lstat(tmp_path / "x.png").st_mode)
