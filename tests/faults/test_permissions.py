"""Folders the daemon may not write or read, with a daemon that is not root (as root, modes are ignored):
an operator's problem, never the job's. The job is kept and tried again, the problem is logged once and
loudly, the rest of the inbox is served, and everything goes through once the folder is fixed."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import Folders, make_image, wait_for

from .conftest import LiveDaemon, RunAs, Spawn, entries, hidden, visible

HELD = "cannot write a destination folder: job kept in the work folder, will retry"
BLOCKED = "cannot take this job out of the inbox; skipped until it changes or is fixed"
UNREADABLE = "a folder in the inbox cannot be read; skipped, the rest is served"
READABLE = "a folder in the inbox can be read again"
PAUSED = "inbox unavailable: paused until it is back"
RESCAN_S = 1.0


def published(*names: str) -> list[str]:
    return sorted(f"{name}{suffix}" for name in names for suffix in (".jpg", ".json", ".mp4"))


@pytest.mark.parametrize("folder", ["outbox", "done"])
def test_an_unwritable_destination_keeps_the_job_until_it_is_fixed(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn, folder: str) -> None:
    f = nobody_folders
    f.write_config(retry_backoff_s=0.3, retry_backoff_max_s=0.6)
    for name in ("outbox", "done", "failed"):
        (f.root / name).mkdir()
    make_image(f.inbox / "a.png")
    (f.inbox / "a.yaml").write_text("seed: 3\n")
    nobody.give(f.root)
    locked = f.root / folder
    locked.chmod(0o555)

    daemon = spawn(f.config, user=nobody)
    held = daemon.read_until(HELD, job="a")
    assert held["level"] == "error" and "Permission denied" in held["error"], held
    (job_dir,) = f.jobs_in_work()  # kept, not failed
    stage = json.loads((job_dir / "job.json").read_text())["stage"]
    if folder == "outbox":
        assert stage in ("encoded", "publishing") and entries(f.outbox) == {}
        assert (job_dir / "input" / "a.png").exists()
    else:  # the outputs are out; the inputs wait for done/
        assert stage == "published", stage
        assert visible(f.outbox) == published("a") and hidden(f.outbox) == []
        assert sorted(os.listdir(job_dir / "input")) == ["a.png", "a.yaml"]
    wait_for(lambda: len(daemon.find(HELD, job="a")) >= 2, 30, "the kept job to be tried again")
    assert entries(f.failed) == {} and not daemon.find("failed")

    locked.chmod(0o755)
    wait_for(lambda: sorted(entries(f.done)) == ["a.png", "a.yaml"] and entries(f.work) == {}, 30,
             "the job to finish once the folder is writable")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert "Traceback" not in daemon.log  # every problem above is expected: none is a crash

    assert visible(f.outbox) == published("a") and hidden(f.outbox) == []  # exactly once
    assert f.metadata("a")["seed"] == 3
    assert entries(f.inbox) == {} and entries(f.failed) == {} and entries(f.work) == {}
    assert not daemon.find("failed") and not daemon.find("job left in the work folder, will retry")


def test_an_unwritable_failed_folder_keeps_the_bad_job_until_it_is_fixed(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn) -> None:
    f = nobody_folders
    f.write_config(retry_backoff_s=0.3, retry_backoff_max_s=0.6)
    (f.root / "failed").mkdir()
    (f.inbox / "bad.png").write_bytes(b"not an image" * 10)
    (f.inbox / "bad.yaml").write_text("prompt: x\n")
    nobody.give(f.root)
    (f.root / "failed").chmod(0o555)

    daemon = spawn(f.config, user=nobody)
    held = daemon.read_until(HELD, job="bad")
    assert held["level"] == "error" and "Permission denied" in held["error"], held
    (job_dir,) = f.jobs_in_work()
    assert json.loads((job_dir / "job.json").read_text())["stage"] == "failing"
    wait_for(lambda: len(daemon.find(HELD, job="bad")) >= 2, 30, "the kept job to be tried again")
    assert entries(f.failed) == {}

    (f.root / "failed").chmod(0o755)
    wait_for(lambda: (f.failed / "bad.error.json").exists() and entries(f.work) == {}, 30,
             "the report once failed/ is writable")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert "Traceback" not in daemon.log
    assert entries(f.failed) == {"bad.png": "file", "bad.yaml": "file", "bad.error.json": "file"}
    report = f.report("bad")
    assert report["stage"] == "load" and "not a readable" in report["message"], report
    assert entries(f.inbox) == {} and entries(f.outbox) == {} and len(daemon.find("failed")) == 1


def drop_three(f: Folders, nobody: RunAs, folder: str, mode: int) -> Path:
    """A job at the top, one in a good sub-folder, and one in a sub-folder given this mode."""
    make_image(f.inbox / "top.png")
    make_image(f.inbox / "other" / "o.png", seed=1)
    make_image(f.inbox / folder / "l.png", seed=2)
    nobody.give(f.root)
    (f.inbox / folder).chmod(mode)
    return f.inbox / folder


def identity(path: Path) -> tuple[int, int, int, bytes]:
    st = os.lstat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, path.read_bytes()


def the_rest_is_served(f: Folders) -> bool:
    return (f.done / "top.png").exists() and (f.done / "other" / "o.png").exists()


def assert_all_three_published(f: Folders, folder: str) -> None:
    assert visible(f.outbox) == published("top", "other/o", f"{folder}/l") and hidden(f.outbox) == []
    assert f.files("done") == sorted(["top.png", "other/o.png", f"{folder}/l.png"])
    assert entries(f.inbox) == {} and entries(f.failed) == {} and entries(f.work) == {}


def test_a_subfolder_the_daemon_may_not_write_is_skipped_logged_once_and_taken_when_fixed(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn) -> None:
    f = nobody_folders
    f.write_config(rescan_s=RESCAN_S)
    locked = drop_three(f, nobody, "locked", 0o555)
    before = identity(locked / "l.png")

    daemon = spawn(f.config, user=nobody)
    wait_for(lambda: the_rest_is_served(f), 60, "the other jobs to be published")
    blocked = daemon.read_until(BLOCKED, job="locked/l")
    assert blocked["level"] == "error" and "Permission denied" in blocked["reason"], blocked
    time.sleep(3 * RESCAN_S)  # several rescans, each trying the claim again, quietly
    assert daemon.process.poll() is None, daemon.log
    assert len(daemon.find(BLOCKED)) == 1, daemon.log
    assert identity(locked / "l.png") == before and entries(locked) == {"l.png": "file"}
    # Each try makes a job folder and removes it again when the rename is refused: none stays.
    wait_for(lambda: entries(f.work) == {}, 10, "the work folder to be empty between tries")
    assert entries(f.failed) == {}

    locked.chmod(0o755)
    fixed = time.monotonic()
    wait_for(lambda: (f.done / "locked" / "l.png").exists(), 30, "the job to be taken once fixed")
    assert time.monotonic() - fixed < RESCAN_S + 10  # within a rescan, plus the job itself
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert "Traceback" not in daemon.log  # every problem above is expected: none is a crash
    assert_all_three_published(f, "locked")
    assert not daemon.find("daemon crashed") and not daemon.find("failed")


def test_run_once_with_a_subfolder_it_may_not_write_serves_the_rest_and_exits_3(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn) -> None:
    f = nobody_folders
    locked = drop_three(f, nobody, "locked", 0o555)
    before = identity(locked / "l.png")
    daemon = spawn(f.config, "--once", user=nobody)
    assert daemon.wait(timeout=90) == 3, daemon.log
    assert the_rest_is_served(f)
    assert visible(f.outbox) == published("top", "other/o")
    assert len(daemon.find(BLOCKED, job="locked/l")) == 1, daemon.log
    assert identity(locked / "l.png") == before
    assert entries(f.work) == {} and entries(f.failed) == {}


@pytest.mark.parametrize("when", ["at start-up", "while running"])
def test_a_subfolder_the_daemon_may_not_read_is_logged_once_and_served_when_fixed(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn, when: str) -> None:
    f = nobody_folders
    f.write_config(rescan_s=RESCAN_S)
    sealed = drop_three(f, nobody, "sealed", 0o000)
    if when == "while running":  # moved in, sealed, once the daemon watches the inbox
        sealed = sealed.rename(f.root / "sealed")

    daemon = spawn(f.config, user=nobody)
    if when == "while running":
        wait_for(lambda: the_rest_is_served(f), 60, "the other jobs to be published")
        sealed = sealed.rename(f.inbox / "sealed")
    wait_for(lambda: the_rest_is_served(f), 60, "the other jobs to be published")
    unreadable = daemon.read_until(UNREADABLE)
    assert unreadable["folder"] == str(sealed) and unreadable["level"] == "error", unreadable
    time.sleep(3 * RESCAN_S)  # several rescans
    assert daemon.process.poll() is None, daemon.log
    assert len(daemon.find(UNREADABLE)) == 1, daemon.log
    assert not daemon.find(PAUSED), daemon.log  # the inbox itself is fine
    wait_for(lambda: entries(f.work) == {}, 10, "the work folder to be empty")
    assert entries(f.failed) == {}

    sealed.chmod(0o755)
    assert daemon.read_until(READABLE, timeout=30)["folder"] == str(sealed)
    wait_for(lambda: (f.done / "sealed" / "l.png").exists(), 30, "the job in the folder to be published")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert "Traceback" not in daemon.log  # every problem above is expected: none is a crash
    assert_all_three_published(f, "sealed")
    assert not daemon.find(PAUSED) and len(daemon.find(UNREADABLE)) == 1


# ---- a scratch folder the daemon cannot write: a plain `cannot start`, never a crash ---------------------


def _refused_scratch(daemon: LiveDaemon, scratch: Path) -> str:
    """The daemon ended start-up with exit 2 and one `cannot start` line naming the setting."""
    assert daemon.wait() == 2, daemon.log
    assert "Traceback" not in daemon.log and not daemon.find("daemon crashed"), daemon.log
    (error,) = [e["error"] for e in daemon.find("cannot start")]
    assert "setting `scratch`" in error and str(scratch) in error, error
    return str(error)


@pytest.mark.parametrize("where", ["scratch in a root folder", "default scratch in root's HOME"])
def test_a_scratch_folder_the_daemon_cannot_write_is_a_plain_startup_error(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn, where: str) -> None:
    f = nobody_folders
    nobody.give(f.root)
    env = {}
    if where == "scratch in a root folder":
        owned = f.config.parent / "root-owned"
        owned.mkdir(mode=0o755)  # made as the test's user: not nobody's, unless the test is nobody
        if os.geteuid() != 0:
            owned.chmod(0o555)
        scratch = owned / "scratch"
        f.write_config(scratch=str(scratch))
    else:  # `sudo -u svc` keeps root's HOME: the default ~/.cache/i2v-watcher/scratch is root's
        if os.geteuid() != 0:
            pytest.skip("needs root: the daemon runs as nobody with root's HOME")
        env["HOME"] = "/root"
        scratch = Path("/root/.cache/i2v-watcher/scratch")
    daemon = spawn(f.config, "--once", user=nobody, **env)
    error = _refused_scratch(daemon, scratch)
    assert "cannot create" in error or "Permission denied" in error, error


def test_a_scratch_path_under_a_regular_file_is_a_plain_startup_error(folders: Folders,
                                                                      spawn: Spawn) -> None:
    (folders.root / "afile").write_text("not a folder\n")
    scratch = folders.root / "afile" / "scratch"
    folders.write_config(scratch=str(scratch))
    make_image(folders.inbox / "a.png")
    daemon = spawn(folders.config, "--once")
    assert "Not a directory" in _refused_scratch(daemon, scratch)
    assert (folders.inbox / "a.png").exists()  # nothing was taken


@pytest.mark.parametrize("setting", ["work", "outbox"])
def test_a_shared_folder_the_daemon_cannot_use_is_a_plain_startup_error(
        nobody_folders: Folders, nobody: RunAs, spawn: Spawn, setting: str) -> None:
    """work/ it cannot write (its worker folder is made there first), or outbox/ under a regular file."""
    f = nobody_folders
    nobody.give(f.root)
    if setting == "work":
        (f.root / "work").mkdir(mode=0o755)  # the test's user's, not nobody's (or read-only)
        if os.geteuid() != 0:
            (f.root / "work").chmod(0o555)
        folder = f.root / "work"
    else:
        (f.root / "afile").write_text("not a folder\n")
        folder = f.root / "afile" / "outbox"
        f.write_config(outbox=str(folder))
    daemon = spawn(f.config, "--once", user=nobody)
    assert daemon.wait() == 2, daemon.log
    assert "Traceback" not in daemon.log and not daemon.find("daemon crashed"), daemon.log
    (error,) = [e["error"] for e in daemon.find("cannot start")]
    assert f"setting `{setting}`" in error and str(folder) in error, error
