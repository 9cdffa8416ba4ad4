"""Leases without shared clocks, worker ids, and the network-share rules of claiming, in-process."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import make_image
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.fs import atomic as fsutil_module
from i2v_watcher.fs.atomic import rename_noreplace
from i2v_watcher.inbox.watch import Candidate
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.work import claim as claim_module
from i2v_watcher.work import lease as lease_module
from i2v_watcher.work import store as workstore_module
from i2v_watcher.work.claim import claim
from i2v_watcher.work.lease import (
    HEARTBEAT_FILE,
    Heartbeat,
    LeaseObserver,
    acquire_worker,
    check_lease_free,
    read_heartbeat,
)
from i2v_watcher.work.store import WorkStore


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")}
    s = Settings(**values, create_inbox=True, lease_timeout_s=2.0, **changes)
    prepare_folders(s)
    return s


def beat(folder: Path, counter: int, state: str = "running", host: str = "elsewhere") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HEARTBEAT_FILE).write_text(json.dumps({"counter": counter, "state": state, "host": host,
                                                      "started_at": "t0", "pid": 1}))


class Clock:
    """This process's monotonic clock, moved by the test: other hosts' clocks are never read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(lease_module.time, "monotonic", lambda: self.now)


def test_a_lease_is_stale_only_when_its_counter_stands_still_on_our_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_for(tmp_path, worker_id="me")
    clock = Clock(monkeypatch)
    observer = LeaseObserver(s)
    beat(s.work / "alive", 1)
    beat(s.work / "dead", 7)
    beat(s.work / "stopped", 3, state="stopped")
    (s.work / "nobeat").mkdir()
    assert [p.name for p in observer.stale_workers()] == ["stopped"]  # said so itself: at once
    for step in range(1, 4):
        clock.now += 1.0
        beat(s.work / "alive", 1 + step)  # slow but alive: the counter moves
        stale = sorted(p.name for p in observer.stale_workers())
    assert stale == ["dead", "nobeat", "stopped"]
    assert "me" not in stale and "queue" not in stale


def test_the_heartbeat_beats_only_while_the_checkpoint_is_fresh(tmp_path: Path) -> None:
    s = settings_for(tmp_path, worker_id="me", max_silent_s=1.0)
    (s.work / "me").mkdir()
    live = Activity()
    heart = Heartbeat(s, live)
    heart.start()
    try:
        first = read_heartbeat(s.work / "me")
        assert first is not None and first["state"] == "running"
        time.sleep(0.8)  # interval: lease_timeout_s / 6
        live.touch()
        time.sleep(0.5)
        moved = read_heartbeat(s.work / "me")
        assert moved is not None and moved["counter"] > first["counter"]
        time.sleep(1.6)  # no checkpoint for longer than max_silent_s: a hung daemon
        hung = read_heartbeat(s.work / "me")
        time.sleep(1.0)
        assert read_heartbeat(s.work / "me") == hung
    finally:
        heart.stop()
    stopped = read_heartbeat(s.work / "me")
    assert stopped is not None and stopped["state"] == "stopped"


def test_a_worker_id_held_by_a_live_daemon(tmp_path: Path) -> None:
    explicit = settings_for(tmp_path, worker_id="gpu-box")
    held = acquire_worker(explicit)
    with pytest.raises(StartupError, match="held by a live daemon"):
        acquire_worker(settings_for(tmp_path, worker_id="gpu-box"))
    held.release()
    acquire_worker(settings_for(tmp_path, worker_id="gpu-box")).release()

    defaults = [settings_for(tmp_path, diffusion={"device": "cuda:1"}) for _ in range(3)]
    locks = [acquire_worker(s) for s in defaults]
    base = defaults[0].worker_id
    assert base.endswith("-gpu1")
    assert [s.worker_id for s in defaults] == [base, f"{base}-2", f"{base}-3"]
    for lock in locks:
        lock.release()


def test_a_start_that_failed_removes_only_a_folder_it_never_used(tmp_path: Path) -> None:
    fresh = acquire_worker(settings_for(tmp_path, worker_id="fresh"))
    fresh.abandon()
    assert not (tmp_path / "work" / "fresh").exists()

    used = settings_for(tmp_path, worker_id="used")
    (used.work / "used").mkdir()
    Heartbeat(used, Activity()).stop()  # an earlier run's last heartbeat: "stopped"
    lock = acquire_worker(used)
    lock.abandon()
    assert sorted(os.listdir(used.work / "used")) == [".lock", HEARTBEAT_FILE]
    acquire_worker(settings_for(tmp_path, worker_id="used")).release()  # the lock was let go


def test_a_lock_file_removed_under_a_waiting_opener_is_made_anew(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that opened work/<id>/.lock just before a failed start removed it locks a new one, in
    a folder that exists, not the removed file."""
    first = acquire_worker(settings_for(tmp_path, worker_id="w"))
    flock = fcntl.flock

    def removed_first(fd: int, operation: int) -> None:
        monkeypatch.setattr(fcntl, "flock", flock)
        first.abandon()  # between this opener's open and its flock
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", removed_first)
    second = acquire_worker(settings_for(tmp_path, worker_id="w"))
    lock_file = tmp_path / "work" / "w" / ".lock"
    assert lease_module._still_there(lock_file, second.fd)
    named, held = os.stat(lock_file), os.fstat(second.fd)
    assert (named.st_ino, named.st_dev) == (held.st_ino, held.st_dev)
    second.release()


def test_a_worker_id_alive_on_another_host_is_refused(tmp_path: Path) -> None:
    s = settings_for(tmp_path, worker_id="shared")
    folder = s.work / "shared"
    beat(folder, 1)
    stop = threading.Event()

    def other_host() -> None:
        counter = 1
        while not stop.wait(0.3):
            counter += 1
            beat(folder, counter)

    thread = threading.Thread(target=other_host, daemon=True)
    thread.start()
    try:
        with pytest.raises(StartupError, match="held by a live daemon on host elsewhere"):
            check_lease_free(s)
    finally:
        stop.set()
        thread.join()
    started = time.monotonic()
    check_lease_free(s)  # the counter stands still now: a dead daemon's leftover
    assert time.monotonic() - started >= s.lease_timeout_s * 0.9


def test_a_claim_answered_enoent_after_it_succeeded_is_kept(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """NFSv3/v4.0 can retransmit a RENAME and answer ENOENT to the retry of one that succeeded."""
    s = settings_for(tmp_path, worker_id="me")
    image = make_image(s.inbox / "a.png")

    def retransmitted(source: Path, target: Path) -> None:
        rename_noreplace(source, target)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(source))

    monkeypatch.setattr(claim_module, "rename_noreplace", retransmitted)
    job = claim(s, WorkStore(s), Candidate(key="a", image=image, mtime=0.0))
    assert job is not None and job.state.stage == "claimed" and job.input("a.png").exists()

    other = s.work / "gone"
    (other / job.id).parent.mkdir(parents=True)
    os.rename(job.dir, other / job.id)
    monkeypatch.setattr(workstore_module, "rename_noreplace", retransmitted)
    taken = WorkStore(s).take(other / job.id, "test")
    assert taken is not None and taken.state.worker_id == "me" and taken.state.takeovers[0]["from"] == "me"


def test_a_stale_handle_on_a_heartbeat_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ESTALE: another host replaced the file by a rename since we looked it up; read it again."""
    beat(tmp_path / "w", 5)
    real = fsutil_module._read_capped
    calls: list[Path] = []

    def stale_once(path: Path, max_bytes: int) -> bytes:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ESTALE, "Stale file handle", str(path))
        return real(path, max_bytes)

    monkeypatch.setattr(fsutil_module, "_read_capped", stale_once)
    assert (read_heartbeat(tmp_path / "w") or {}).get("counter") == 5 and len(calls) == 2
