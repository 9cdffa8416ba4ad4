"""Retention and a host clock that is wrong (issue 18, class 12): a daemon whose clock ran 45 days ahead
compared it with the share's ctimes at start-up and pruned files that had just arrived. A real daemon
under libfaketime (its clock 45 days ahead, the files' times the kernel's) keeps them, and still works;
in-process, the age is judged on the share's clock alone, and the first prune waits."""

from __future__ import annotations

import datetime
import glob
import os
import time
from pathlib import Path

import pytest

from conftest import Folders, daemon_env, make_image, wait_for
from faults.conftest import Spawn
from i2v_watcher.config.settings import Settings
from i2v_watcher.service import retention
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.retention import Retention, prune

AHEAD_DAYS = 45
DAY_S = 86400.0


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
                   + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        pytest.fail("libfaketime is missing: run tests/setup.sh (it installs Debian's faketime package)")
    return found[0]


# libfaketime 0.9.10 with monotonic time left alone (as on a host whose wall clock alone is wrong) turns
# an absolute clock_nanosleep on CLOCK_MONOTONIC, which is how Python's time.sleep sleeps, into EINVAL;
# faking monotonic time too instead makes every timed lock wait (sem_clockwait, not intercepted) last
# for ever. So the wall clock alone is faked, and time.sleep waits on a lock (the same kernel clock).
SLEEP_ON_A_LOCK = """import threading, time


def _sleep(seconds):
    if seconds > 0:
        threading.Event().wait(seconds)


time.sleep = _sleep
"""


def clock_ahead(base: Path, days: int) -> dict[str, str]:
    """The environment of a daemon whose wall clock is `days` ahead; files' times stay the kernel's."""
    shim = base / "clock-shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SLEEP_ON_A_LOCK)
    return {"LD_PRELOAD": libfaketime(), "FAKETIME": f"+{days}d", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "NO_FAKE_STAT": "1", "PYTHONPATH": os.pathsep.join([str(shim), daemon_env()["PYTHONPATH"]])}


def arrive(source: Path, destination: Path) -> None:
    """A file moved in now, as the daemon moves a job's files: its ctime is the kernel's now."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"just arrived")
    os.utime(source, (time.time() - 400 * DAY_S,) * 2)  # the user's file is old; its arrival is not
    source.rename(destination)


def arrived(folders: Folders) -> list[Path]:
    trip = folders.failed / "trip"
    return [folders.done / "earlier.png", trip / "b.png", trip / "b.error.json"]


def test_a_host_clock_45_days_ahead_prunes_nothing_that_just_arrived(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(retention_days=30)
    for index, path in enumerate(arrived(folders)):
        arrive(folders.root / f"incoming{index}", path)
    daemon = spawn(folders.config, **clock_ahead(folders.root.parent, AHEAD_DAYS))
    watching = daemon.read_until("watching")
    logged = datetime.datetime.fromisoformat(watching["timestamp"]).timestamp()
    assert abs(logged - time.time() - AHEAD_DAYS * DAY_S) < DAY_S, watching  # its clock is ahead
    make_image(folders.inbox / "a.png")
    daemon.read_until("published", timeout=60)  # it works, with its clock 45 days ahead
    wait_for(lambda: (folders.done / "a.png").exists(), 10, "the job's input in done/")  # moved after
    assert all(path.exists() for path in arrived(folders)), daemon.log
    assert not daemon.find("pruned old files")


def settings_for(root: Path, retention_days: float) -> Settings:
    values = {name: str(root / name) for name in ("inbox", "outbox", "failed", "done", "work")}
    settings = Settings(**values, create_inbox=True, worker_id="w", retention_days=retention_days)
    prepare_folders(settings)
    return settings


def test_age_is_judged_on_the_shares_clock_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path, retention_days=30)
    arrive(tmp_path / "x", settings.done / "fresh.png")
    arrive(tmp_path / "y", settings.failed / "sub" / "dated.png")
    os.utime(settings.failed / "sub" / "dated.png", (time.time() + 40 * DAY_S,) * 2)  # a future mtime
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + AHEAD_DAYS * DAY_S)  # this host: ahead
    assert prune(settings) == 0
    assert (settings.done / "fresh.png").exists()
    # The share's clock itself says 31 days have passed: the arrival is old, the future mtime is not.
    share_now = retention.probe_share_time
    monkeypatch.setattr(retention, "probe_share_time", lambda folder: share_now(folder) + 31 * DAY_S)
    assert prune(settings) == 1
    assert not (settings.done / "fresh.png").exists() and (settings.failed / "sub" / "dated.png").exists()
    assert sorted(p.name for p in settings.done.iterdir()) == []  # the probe file is gone too


def test_the_first_prune_waits_after_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path, retention_days=0.1 / DAY_S)
    arrive(tmp_path / "x", settings.done / "old.png")
    time.sleep(0.2)  # older than the retention
    monkeypatch.setattr(retention, "FIRST_PRUNE_S", 0.5)
    part = Retention(settings)
    part.start()
    part.tick()
    assert (settings.done / "old.png").exists()  # not at start-up
    assert part.next_at() > time.monotonic()
    time.sleep(0.5)
    part.tick()
    assert not (settings.done / "old.png").exists()
    assert part.next_at() >= time.monotonic() + retention.RETENTION_EVERY_S - 1
