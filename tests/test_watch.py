"""Watch: which files of the inbox are jobs, and when they are complete enough to be taken."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from conftest import make_image
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import InboxUnavailable
from i2v_watcher.inbox import scan_cache
from i2v_watcher.inbox.watch import HEAD_CHECKED, Inbox, Watcher
from i2v_watcher.job import spec


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
    # Oldest: the first to arrive in the inbox (issue 18: not the mtime, which copies keep and which
    # is set here the other way round).
    for i, name in enumerate(["sub/dir/old.JPG", "mid.webp", "new.png"]):
        path = make_image(inbox.root / name, fmt="JPEG" if name.endswith("JPG") else None)
        (inbox.root / name).with_suffix(".yaml").write_text("{}\n")
        os.utime(path, (1000 + [3, 1, 2][i], 1000 + [3, 1, 2][i]))
        time.sleep(0.01)  # arrivals a clock tick apart
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
    from i2v_watcher.fs.mounts import filesystem_type, is_network_fs

    assert filesystem_type(Path("/proc")) == "proc"
    assert filesystem_type(Path("/proc/self")) == "proc"  # the longest mount point wins
    for network in ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuse", "9p"):
        assert is_network_fs(network), network
    for local in ("ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay"):
        assert not is_network_fs(local), local


# ---------------------------------------------------------------------------------------------
# What a scan keeps from the last one, and scans narrowed to the paths the watcher reported
# ---------------------------------------------------------------------------------------------

def drop_job(root: Path, name: str, sidecar: str = "prompt: x\n") -> Path:
    image = make_image(root / f"{name}.png")
    (root / f"{name}.yaml").write_text(sidecar)
    return image


def test_a_file_replaced_by_one_of_the_same_size_and_mtime_is_looked_at_again(inbox: Inbox) -> None:
    image = drop_job(inbox.root, "a")
    assert settle(inbox) == ["a"]
    before = image.stat()
    twin = image.with_name(".twin.part")
    twin.write_bytes(image.read_bytes()[::-1])  # other bytes, same size
    os.utime(twin, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(twin, image)
    assert image.stat().st_ino != before.st_ino and image.stat().st_mtime_ns == before.st_mtime_ns
    scan = inbox.scan()
    assert scan.ready == [] and scan.waiting == 1  # a new file: it settles again
    time.sleep(0.25)
    assert [c.key for c in inbox.scan().ready] == ["a"]


@pytest.mark.parametrize("narrowed", [False, True])
def test_a_modified_sidecar_changes_the_priority(inbox: Inbox, narrowed: bool) -> None:
    drop_job(inbox.root, "a", "priority: 1\n")
    drop_job(inbox.root, "b", "priority: 2\n")
    assert settle(inbox) == ["b", "a"]
    (inbox.root / "a.yaml").write_text("priority: 3  # raised\n")
    changes = {str(inbox.root / "a.yaml")} if narrowed else None
    assert [c.key for c in inbox.scan(changes).ready] == ["b"]  # a settles again
    time.sleep(0.25)
    ready = inbox.scan(set() if narrowed else None).ready
    assert [(c.key, c.priority) for c in ready] == [("a", 3), ("b", 2)]


@pytest.mark.parametrize("narrowed", [False, True])
def test_a_job_taken_meanwhile_disappears_from_ready(inbox: Inbox, narrowed: bool) -> None:
    for name in ("a", "b", "c"):
        drop_job(inbox.root, name)
    assert settle(inbox) == ["a", "b", "c"]
    for name in ("a.png", "a.yaml", "b.png"):  # taken by another worker; b's sidecar is still there
        (inbox.root / name).unlink()
    # Narrowed with no news at all: the watcher's events may come after this scan. The head of the
    # queue is looked at again all the same, so a job just taken is never offered twice.
    scan = inbox.scan(set() if narrowed else None)
    assert [c.key for c in scan.ready] == ["c"] and scan.orphans == 1


@pytest.mark.parametrize("narrowed", [False, True])
def test_a_link_left_in_the_inbox_is_not_offered_again_once_reported(
        inbox: Inbox, tmp_path: Path, narrowed: bool) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    (inbox.root / "evil.png").symlink_to(tmp_path / "secret.png")
    ready = settle(inbox)
    assert ready == ["evil"]
    # Taken, failed, reported; failed/ is on another filesystem, so the link stayed where it was:
    # nothing in the inbox changed, and no event says so.
    inbox.settings.failed.mkdir()
    (inbox.settings.failed / "evil.error.json").write_text('{"left_in_inbox": {"evil.png": "link"}}')
    scan = inbox.scan(set() if narrowed else None)
    assert scan.ready == [] and scan.waiting == 0 and scan.orphans == 0


@pytest.mark.parametrize("narrowed", [False, True])
def test_a_job_the_daemon_took_is_not_offered_again_until_its_files_change(
        inbox: Inbox, narrowed: bool) -> None:
    drop_job(inbox.root, "a")
    drop_job(inbox.root, "b")
    assert settle(inbox) == ["a", "b"]
    inbox.taken(inbox.scan().ready[0])  # claimed, but the scan runs before anything shows in the inbox
    assert [c.key for c in inbox.scan(set() if narrowed else None).ready] == ["b"]
    drop_job(inbox.root, "a", "prompt: another job under the same name\n")
    changes = {str(inbox.root / "a.png"), str(inbox.root / "a.yaml")} if narrowed else None
    assert [c.key for c in inbox.scan(changes).ready] == ["b"]  # a new file settles first
    time.sleep(0.25)
    assert [c.key for c in inbox.scan(set() if narrowed else None).ready] == ["b", "a"]  # a is newer


def test_what_a_claim_leaves_behind_is_not_offered_again(inbox: Inbox, tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    (inbox.root / "q.png").symlink_to(tmp_path / "secret.png")
    (inbox.root / "q.yaml").write_text("prompt: follow me\n")
    assert settle(inbox) == ["q"]
    inbox.taken(inbox.scan().ready[0])
    (inbox.root / "q.yaml").unlink()  # the claim took the sidecar; the link stays (failed/ is elsewhere)
    for changes in (None, {str(inbox.root / "q.yaml")}, set()):  # before the job's report is written
        assert inbox.scan(changes).ready == []


def test_a_narrowed_scan_looks_only_where_the_watcher_saw_changes(inbox: Inbox) -> None:
    drop_job(inbox.root, "a")
    assert settle(inbox) == ["a"]
    drop_job(inbox.root / "sub" / "new", "b")  # folders that appeared, with a job in them
    drop_job(inbox.root, "unreported")  # a change the events missed
    scan = inbox.scan({str(inbox.root / "sub")})
    assert not scan.full and scan.waiting == 1  # sub/new/b is new; "unreported" is not seen yet
    time.sleep(0.25)
    assert [c.key for c in inbox.scan(set()).ready] == ["a", "sub/new/b"]
    (inbox.root / "sub" / "new").rename(inbox.root / "sub" / "moved")  # a folder renamed
    scan = inbox.scan({str(inbox.root / "sub" / "new"), str(inbox.root / "sub" / "moved")})
    assert [c.key for c in scan.ready] == ["a"] and scan.waiting == 1
    shutil.rmtree(inbox.root / "sub")  # a folder removed
    scan = inbox.scan({str(inbox.root / "sub" / "moved" / "b.png"), str(inbox.root / "sub")})
    assert [c.key for c in scan.ready] == ["a"] and scan.waiting == 0


def test_a_full_walk_every_rescan_s_catches_what_the_events_missed(tmp_path: Path) -> None:
    folders = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    (tmp_path / "inbox").mkdir()
    inbox = Inbox(Settings(**folders, settle_s=0.0, sidecar_grace_s=0.0, rescan_s=1.0))
    drop_job(inbox.root, "a")
    assert [c.key for c in inbox.scan().ready] == ["a"]
    drop_job(inbox.root / "deep", "missed")
    scan = inbox.scan(set())  # the watcher says nothing changed
    assert not scan.full and [c.key for c in scan.ready] == ["a"]
    time.sleep(1.05)
    scan = inbox.scan(set())
    assert scan.full and [c.key for c in scan.ready] == ["a", "deep/missed"]
    # Paths the inbox does not recognise as its own: the watcher's list cannot be trusted.
    assert inbox.scan({str(tmp_path / "elsewhere" / "x.png")}).full


def test_an_unreadable_subfolder_is_logged_once_and_served_once_readable(
        inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    drop_job(inbox.root, "a")
    drop_job(inbox.root / "sealed", "s")
    sealed = str(inbox.root / "sealed")
    real_scandir = os.scandir

    def refusing(path: Any) -> Any:  # as root, modes are ignored: refuse like a 0o000 folder would
        if os.fspath(path) == sealed:
            raise PermissionError(13, "Permission denied", sealed)
        return real_scandir(path)

    monkeypatch.setattr(scan_cache.os, "scandir", refusing)
    with structlog.testing.capture_logs() as logs:
        for changes in (None, None, {sealed}, {os.path.join(sealed, "s.png")}):
            scan = inbox.scan(changes)
            assert scan.blocked == 1
        time.sleep(0.25)
        assert [c.key for c in inbox.scan().ready] == ["a"]
        monkeypatch.setattr(scan_cache.os, "scandir", real_scandir)
        inbox.scan({sealed})  # its mode changed: the watcher reports the folder itself
        time.sleep(0.25)
        scan = inbox.scan(set())
    assert [c.key for c in scan.ready] == ["a", "sealed/s"] and scan.blocked == 0
    events = [e["event"] for e in logs if "folder" in e]
    assert events == ["a folder in the inbox cannot be read; skipped, the rest is served",
                      "a folder in the inbox can be read again"]


@pytest.mark.parametrize(("mode", "linked"), [("inotify", False), ("poll", False), ("inotify", True)])
def test_the_watcher_reports_the_paths_that_changed(tmp_path: Path, mode: str, linked: bool) -> None:
    folders = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    if linked:  # the inbox is a link to the share's folder: inotify must watch the folder itself
        (tmp_path / "share").mkdir()
        (tmp_path / "inbox").symlink_to(tmp_path / "share")
    else:
        (tmp_path / "inbox").mkdir()
    settings = Settings(**folders, settle_s=0.0, sidecar_grace_s=0.0, watch_mode=mode, poll_interval_s=0.1)
    inbox, watcher = Inbox(settings), Watcher(settings)
    drop_job(inbox.root, "old")
    watcher.start()
    try:
        assert watcher.take_changes() is None  # just started: what came before is unknown
        assert inbox.scan(None).full
        watcher.changed.clear()
        drop_job(inbox.root / "sub", "new")
        (inbox.root / "old.yaml").unlink()
        found: list[str] = []
        deadline = time.monotonic() + 10
        while found != ["old", "sub/new"] and time.monotonic() < deadline:
            watcher.changed.wait(0.5)
            watcher.changed.clear()
            changes = watcher.take_changes()
            assert changes is not None
            scan = inbox.scan(changes)
            assert not scan.full
            found = [c.key for c in scan.ready]
        assert found == ["old", "sub/new"]
        assert inbox.scan(watcher.take_changes()).ready[0].sidecar is None
    finally:
        watcher.stop()
    assert watcher.take_changes() is None  # stopped: nothing can be vouched for


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts what a scan asks of the filesystem: entries listed, stats, opens, sidecars parsed."""
    counts = dict.fromkeys(("listed", "stat", "open", "parse"), 0)
    real_scandir, real_lstat, real_open = os.scandir, os.lstat, scan_cache.open_nofollow
    real_parse = spec.parse_sidecar

    class Entry:
        def __init__(self, entry: os.DirEntry[str]) -> None:
            self.name, self.path, self._entry = entry.name, entry.path, entry

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            counts["stat"] += 1
            return self._entry.stat(follow_symlinks=follow_symlinks)

    class Listing:
        def __init__(self, path: Any) -> None:
            self._listing = real_scandir(path)

        def __enter__(self) -> Iterator[Entry]:
            for entry in self._listing:
                counts["listed"] += 1
                yield Entry(entry)

        def __exit__(self, *exc: object) -> None:
            self._listing.close()

    def lstat(path: Any, **kwargs: Any) -> os.stat_result:
        counts["stat"] += 1
        return real_lstat(path, **kwargs)

    def opener(path: str, flags: int) -> int:
        counts["open"] += 1
        return real_open(path, flags)

    def parse(data: bytes, *, max_bytes: int) -> Any:
        counts["parse"] += 1
        return real_parse(data, max_bytes=max_bytes)

    monkeypatch.setattr(scan_cache.os, "scandir", Listing)
    monkeypatch.setattr(scan_cache.os, "lstat", lstat)
    monkeypatch.setattr(scan_cache, "open_nofollow", opener)
    monkeypatch.setattr(spec, "open_nofollow", opener)  # what read_sidecar opens with
    monkeypatch.setattr(spec, "parse_sidecar", parse)
    return counts


def test_a_scan_with_nothing_changed_repeats_no_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folders = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    root = tmp_path / "inbox"
    jobs, litter = 2_000, 10_000
    for index in range(jobs):
        folder = root / f"shoot{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{index:05d}.png").write_bytes(b"\x89PNG not really")
        (folder / f"IMG_{index:05d}.yaml").write_text(f"priority: {index % 3}\n")
    for index in range(litter):  # NAS litter that ignore_patterns skips: never a job, never opened
        name = f"._IMG_{index:05d}.png" if index % 2 else f"IMG_{index:05d}.png.tmp"
        (root / f"shoot{index % 10}" / name).write_bytes(b"litter")
    inbox = Inbox(Settings(**folders, settle_s=0.0, sidecar_grace_s=0.0))
    counts = counting(monkeypatch)

    def scan(changes: set[str] | None) -> tuple[int, dict[str, int]]:
        before = dict(counts)
        ready = len(inbox.scan(changes).ready)
        return ready, {k: counts[k] - before[k] for k in counts}

    with structlog.testing.capture_logs():  # one debug line per ignored name: kept out of the output
        first = scan(None)
    assert first[0] == jobs and first[1]["open"] >= 2 * jobs and first[1]["parse"] == jobs
    full = scan(None)  # a full walk: every job's file is stat'ed (nothing else tells a change)...
    assert full[0] == jobs and full[1]["open"] == 0 and full[1]["parse"] == 0  # ...and nothing more
    assert full[1]["stat"] <= first[1]["stat"]
    assert full[1]["open"] + full[1]["stat"] < (first[1]["open"] + first[1]["stat"]) / 2
    narrowed = scan(set())  # the watcher saw nothing: only the head of the queue is looked at
    # One batch of the root listing says the inbox is readable (check_available); nothing else.
    assert narrowed[0] == jobs and narrowed[1]["listed"] <= 1 and narrowed[1]["open"] == 0
    assert narrowed[1]["stat"] <= 2 * HEAD_CHECKED
    changed = root / "shoot3" / "IMG_00003.yaml"
    changed.write_text("priority: 9\n")
    one = scan({str(changed)})
    assert one[0] == jobs and one[1]["listed"] <= 1 and one[1]["stat"] <= 2 * HEAD_CHECKED + 1
    assert one[1]["open"] == 2 and one[1]["parse"] == 1  # settled (opened), then its priority read
    assert inbox.scan(set()).ready[0].key == "shoot3/IMG_00003"
