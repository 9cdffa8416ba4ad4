"""The inbox's bounds and its order (issue 18): a subtree nested too deep or with paths too long is skipped
and reported, never an outage of the inbox; ready jobs are taken by priority, then by arrival (ctime),
whatever mtimes the files carry. The daemon itself is tried in tests/faults/test_deep_trees.py."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from conftest import make_image
from i2v_watcher.config.settings import Settings
from i2v_watcher.fs.atomic import NAME_MAX
from i2v_watcher.inbox.bounds import MAX_DEPTH, PATH_MAX, TOO_DEEP, TOO_LONG, bounded_listdir, folder_room
from i2v_watcher.inbox.queue import queued_jobs
from i2v_watcher.inbox.skipped import BEYOND, TOLD
from i2v_watcher.inbox.watch import Inbox

YEAR_2015 = 1_420_070_400.0
YEAR_2035 = 2_051_222_400.0


def nest(parent: Path, names: list[str], file: str | None = None) -> Path:
    """Folders parent/names[0]/names[1]/… made through directory descriptors (a path past PATH_MAX
    cannot be named whole), with an empty `file` at the bottom; returns the top folder."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        if file is not None:
            os.close(os.open(file, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return parent / names[0]


def remove(path: Path) -> None:
    """Delete a tree of any depth or path length (Python 3.11's rmtree recurses and runs out of stack,
    `rm -rf` takes seconds): each sub-folder is moved up beside the tree before it is emptied, so no
    path grows long, nothing recurses, and no descriptor is held."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    pending, moved = [path], 0
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            found = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for entry_path, is_dir in found:
            if is_dir:
                moved += 1
                pending.append(path.parent / f".removing-{moved}-{path.name[:40]}")
                os.rename(entry_path, pending[-1])
            else:
                os.unlink(entry_path)
        os.rmdir(folder)


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Inbox]:
    folders = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    (tmp_path / "inbox").mkdir()
    yield Inbox(Settings(**folders, settle_s=0.1, sidecar_grace_s=0.0, orphan_sidecar_s=0.5))
    remove(tmp_path / "inbox")


def ready(inbox: Inbox, changes: set[str] | None = None) -> list[str]:
    inbox.scan(changes)
    time.sleep(0.15)
    return [c.key for c in inbox.scan().ready]


def test_a_job_at_the_deepest_level_is_served_one_below_is_skipped_and_reported(inbox: Inbox) -> None:
    nest(inbox.root, ["d"] * MAX_DEPTH, "served.png")
    level_100 = inbox.root.joinpath(*["d"] * MAX_DEPTH)
    nest(level_100, ["too-deep"], "skipped.png")
    make_image(inbox.root / "plain.png")
    jobs = ["d/" * MAX_DEPTH + "served", "plain"]
    with structlog.testing.capture_logs() as logs:
        assert ready(inbox) == jobs
        assert ready(inbox) == jobs  # a second full walk: told once
        # A change reported inside it (inotify watches deeper than the scan looks): skipped as well.
        scan = inbox.scan({str(level_100 / "too-deep" / "skipped.png")})
    assert not scan.full and scan.blocked == 1 and [c.key for c in scan.ready] == jobs
    too_deep = str(level_100 / "too-deep")
    assert inbox.unreadable_folders == {too_deep: TOO_DEEP}
    told = [e for e in logs if e["event"] == BEYOND]
    assert len(told) == 1 and told[0]["reason"] == TOO_DEEP, logs
    assert "…" in told[0]["folder"] and told[0]["folder"].endswith(f"/too-deep ({len(too_deep)} bytes)")


def test_a_path_longer_than_path_max_never_blinds_the_inbox(inbox: Inbox) -> None:
    names = [chr(ord("a") + i) * 250 for i in range(17)]  # 17 names of 251 bytes: over 4096
    top = nest(inbox.root, names, "x.png")
    make_image(inbox.root / "ok.png")
    warnings: list[str] = []
    with structlog.testing.capture_logs() as logs:
        inbox.scan()
        time.sleep(0.15)
        rows = queued_jobs(inbox, warnings.append)
        # The watcher reports a path below it (it may, up to PATH_MAX): a narrowed look copes too.
        below = os.path.join(str(top), *names[1:15])
        assert inbox.scan({below, os.path.join(below, "y.png")}).blocked == 1
    assert [(r.key, r.why) for r in rows] == [("ok", "ready")]
    ((path, why),) = inbox.unreadable_folders.items()
    assert why == TOO_LONG and path.startswith(str(top)) and len(os.fsencode(path)) < PATH_MAX, path
    assert len(warnings) == 1 and TOO_LONG in warnings[0] and len(warnings[0]) < 400, warnings
    assert [e["reason"] for e in logs if e["event"] == BEYOND] == [TOO_LONG]


def test_a_folder_whose_copy_in_failed_would_be_too_long_is_skipped(tmp_path: Path) -> None:
    """A job is taken only where its sub-folder fits below every folder it goes to: here failed/, whose
    path is 1,000 bytes longer than the inbox's. A job nested deeper would be claimed, then never be
    reported (nor published)."""
    failed = tmp_path.joinpath(*["f" * 99] * 10)  # 1,000 bytes more than the inbox's path
    folders = {n: str(tmp_path / n) for n in ("inbox", "outbox", "done", "work")}
    inbox = Inbox(Settings(**folders, failed=str(failed), settle_s=0.0, sidecar_grace_s=0.0))
    inbox.root.mkdir()
    room = folder_room([inbox.root, failed])
    assert room < PATH_MAX - len(os.fsencode(str(failed))) - NAME_MAX - 2  # a file of any name fits
    names = ["n" * 200] * (room // 201 + 1)  # the last folder's path below the inbox: past `room`
    nest(inbox.root, names[:-1], "fits.png")
    nest(inbox.root.joinpath(*names[:-1]), names[-1:], "too-long.png")
    try:
        assert [c.key for c in inbox.scan().ready] == ["/".join(names[:-1]) + "/fits"]
        assert list(inbox.unreadable_folders.values()) == [TOO_LONG]
        reported = failed.joinpath(*names[:-1], "fits-99.error.json")  # a report's name there fits
        assert len(os.fsencode(str(reported))) < PATH_MAX
    finally:
        remove(inbox.root)


def test_many_skipped_paths_are_named_up_to_a_bound_then_counted(inbox: Inbox) -> None:
    level_100 = nest(inbox.root, ["d"] * MAX_DEPTH).joinpath(*["d"] * (MAX_DEPTH - 1))
    for i in range(TOLD + 5):
        (level_100 / f"t{i}").mkdir()
    with structlog.testing.capture_logs() as logs:
        inbox.scan()
    assert len([e for e in logs if e["event"] == BEYOND]) == TOLD
    (more,) = [e for e in logs if e.get("skipped_not_named")]
    assert more["skipped_not_named"] == 5 and more["skipped"] == TOLD + 5
    assert inbox.skipped.warnings()[-1] == "and 5 more skipped paths in the inbox"


def test_the_polling_watcher_lists_within_the_bounds(tmp_path: Path) -> None:
    root = str(tmp_path)
    nest(tmp_path, ["a"] * MAX_DEPTH + ["b"])
    nest(tmp_path, [chr(ord("c") + i) * 250 for i in range(17)])
    sealed = tmp_path / "sealed"
    sealed.mkdir(mode=0)
    listdir = bounded_listdir(root)
    assert sorted(e.name for e in listdir(root)) == ["a", "ccc" + "c" * 247, "sealed"]
    level_99 = os.path.join(root, *["a"] * MAX_DEPTH)
    assert [e.name for e in listdir(os.path.dirname(level_99))] == ["a"]  # level 100: listed
    assert list(listdir(level_99)) == []  # "b" at level 101: left out
    if os.geteuid() != 0:  # as root, modes are ignored
        assert list(listdir(str(sealed))) == []  # a sub-folder that cannot be listed: empty
    with pytest.raises(FileNotFoundError):
        list(bounded_listdir(root + "/gone")(root + "/gone"))  # the inbox itself: its error


def test_arrival_orders_the_queue_not_the_mtime(inbox: Inbox) -> None:
    """`cp -p` keeps an mtime of 2015 or of 2035: neither jumps nor starves the queue."""
    for name, mtime in (("first", None), ("backdated", YEAR_2015), ("future", YEAR_2035), ("last", None)):
        image = make_image(inbox.root / f"{name}.png")
        if mtime is not None:
            os.utime(image, (mtime, mtime))
        time.sleep(0.01)  # a few ticks of the clock that stamps ctimes
    (inbox.root / "urgent.yaml").write_text("priority: 5\n")
    make_image(inbox.root / "urgent.png")
    os.utime(inbox.root / "urgent.png", (YEAR_2035, YEAR_2035))
    inbox.scan()
    time.sleep(0.15)  # one settle_s: the future-dated file settles like the others
    assert [c.key for c in inbox.scan().ready] == ["urgent", "first", "backdated", "future", "last"]
    assert [row.key for row in inbox.listing()] == ["urgent", "first", "backdated", "future", "last"]
