"""Watch: which files of the inbox are jobs, and when they are complete enough to be taken."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import make_image
from i2v_watcher.config import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.watch import Inbox


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    folders = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    (tmp_path / "inbox").mkdir()
    return Inbox(Settings(**folders, settle_s=0.2, sidecar_grace_s=0.3, orphan_sidecar_s=0.5))


def settle(inbox: Inbox, seconds: float = 0.25) -> list[str]:
    inbox.scan()
    time.sleep(seconds)
    return [c.key for c in inbox.scan().ready]


def test_a_file_is_taken_only_once_it_stopped_changing(inbox: Inbox) -> None:
    image = make_image(inbox.root / "a.png")
    (inbox.root / "a.yaml").write_text("prompt: x\n")
    assert inbox.scan().ready == []  # first sight: not settled yet
    time.sleep(0.25)
    with open(image, "ab") as handle:  # the writer is still at it
        handle.write(b"\0")
    assert inbox.scan().ready == []
    time.sleep(0.25)
    ready = inbox.scan().ready
    assert [(c.key, c.image, c.sidecar) for c in ready] == [("a", image, inbox.root / "a.yaml")]


def test_an_image_waits_for_its_sidecar_then_goes_without(inbox: Inbox) -> None:
    make_image(inbox.root / "a.png")
    scan_then = settle(inbox)
    assert scan_then == []  # within sidecar_grace_s
    time.sleep(0.35)
    ready = inbox.scan().ready
    assert [(c.key, c.sidecar) for c in ready] == [("a", None)]


def test_jobs_are_offered_oldest_first_and_in_subfolders(inbox: Inbox) -> None:
    for i, name in enumerate(["new.png", "sub/dir/old.JPG", "mid.webp"]):
        path = make_image(inbox.root / name, fmt="JPEG" if name.endswith("JPG") else None)
        (inbox.root / name).with_suffix(".yaml").write_text("{}\n")
        os.utime(path, (1000 + [3, 1, 2][i], 1000 + [3, 1, 2][i]))
    assert settle(inbox) == ["sub/dir/old", "mid", "new"]


LITTER = [
    ".DS_Store", "._photo.png", "Thumbs.db", "desktop.ini", "@eaDir/photo.png/SYNOPHOTO_THUMB.jpg",
    "#recycle/x.png", ".photo.png.Xy12ab", "photo.png.part", "photo.png.crdownload", "~$photo.png",
    "photo.png~", ".sync/x.png", "photo.png.tmp", "sub/.DS_Store",
]


def test_litter_is_never_a_job(inbox: Inbox) -> None:
    for name in LITTER:
        path = inbox.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"junk")
    inbox.scan()
    time.sleep(0.6)
    scan = inbox.scan()
    assert scan.ready == [] and scan.waiting == 0 and scan.orphans == 0


def test_things_that_are_not_jobs_are_reported(inbox: Inbox, tmp_path: Path) -> None:
    (inbox.root / "notes.txt").write_text("hello")
    (tmp_path / "secret.png").write_bytes(b"x")
    (inbox.root / "evil.png").symlink_to(tmp_path / "secret.png")
    make_image(inbox.root / "twin.png")
    make_image(inbox.root / "twin.jpg", fmt="JPEG")
    ready = {c.key: c for c in settle(inbox) and inbox.scan().ready}
    assert "unsupported file type '.txt'" in (ready["notes.txt"].problem or "")
    assert "symbolic links" in (ready["evil"].problem or "")
    assert "share the job name" in (ready["twin"].problem or "")
    assert ready["evil"].files == [inbox.root / "evil.png"]


def test_a_lonely_sidecar_is_reported_after_its_grace(inbox: Inbox) -> None:
    (inbox.root / "lonely.yaml").write_text("prompt: x\n")
    scan = inbox.scan()
    time.sleep(0.25)
    scan = inbox.scan()
    assert scan.ready == [] and scan.orphans == 1
    time.sleep(0.6)
    (candidate,) = inbox.scan().ready
    assert candidate.image is None and "without an image" in (candidate.problem or "")


def test_a_vanished_inbox_is_unavailable_not_empty(inbox: Inbox) -> None:
    inbox.root.rename(inbox.root.with_name("gone"))
    with pytest.raises(InboxUnavailable):
        inbox.scan()


def test_filesystem_types_choose_the_watch_mode() -> None:
    from i2v_watcher.mounts import filesystem_type, is_network_fs

    assert filesystem_type(Path("/proc")) == "proc"
    assert filesystem_type(Path("/proc/self")) == "proc"  # the longest mount point wins
    for network in ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuse", "9p"):
        assert is_network_fs(network), network
    for local in ("ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay"):
        assert not is_network_fs(local), local
