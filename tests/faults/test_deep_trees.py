"""A tree nobody can walk, put into the inbox (issue 18): 1,200 folders deep (watchdog's recursive inotify
walk dies of RecursionError in it), or with paths over PATH_MAX (a scan's lstat fails with ENAMETOOLONG).
It is skipped and reported once, in the log and by `status`; every other job is served, at the pace of the
watcher (rescan_s is set far out of reach), and the daemon starts again with the tree still there."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from test_inbox_bounds import nest, remove

from conftest import Folders, make_image
from i2v_watcher.config.settings import load_settings
from i2v_watcher.inbox.bounds import TOO_DEEP, TOO_LONG
from i2v_watcher.inbox.skipped import BEYOND
from i2v_watcher.ops.status import collect

from .conftest import LiveDaemon, Spawn

RESCAN_S = 600.0  # no periodic walk in these tests: the watcher's news is what finds the jobs


def served(daemon: LiveDaemon, folders: Folders, name: str) -> None:
    daemon.read_until("published", timeout=90, job=name)
    assert (folders.outbox / f"{name}.mp4").is_file()


def status_warnings(folders: Folders) -> list[str]:
    """What `status --json` lists as warnings, in-process (the dashboard shows the same: queued_jobs)."""
    warnings: list[str] = collect(load_settings(folders.config))["warnings"]
    return warnings


def stopped_cleanly(daemon: LiveDaemon) -> None:
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert "Traceback" not in daemon.log and "daemon crashed" not in daemon.log, daemon.log


def test_a_tree_1200_folders_deep_is_skipped_and_the_daemon_serves_and_restarts(
        folders: Folders, spawn: Spawn, tmp_path: Path) -> None:
    f = folders
    f.write_config(rescan_s=RESCAN_S, sidecar_grace_s=0.0)  # watch_mode auto: inotify on this disk
    deep = nest(tmp_path, ["deep"] + ["d"] * 1200, "buried.png")
    try:
        daemon = spawn(f.config)
        daemon.read_until("watching")
        os.rename(deep, f.inbox / "deep")  # moved in while watched: watchdog walks it, and dies
        make_image(f.inbox / "next.png")
        served(daemon, f, "next")  # its event came after the tree's: only the watcher's successor saw it
        assert daemon.find("an inbox watcher thread died")
        assert daemon.find("the inbox watcher stopped working; polling the inbox instead")
        (skipped,) = daemon.find(BEYOND)
        assert skipped["reason"] == TOO_DEEP and skipped["folder"].endswith(" bytes)"), skipped
        assert any(TOO_DEEP in line for line in status_warnings(f))
        stopped_cleanly(daemon)
        assert len(daemon.find(BEYOND)) == 1  # told once

        make_image(f.inbox / "after-restart.png", seed=2)
        again = spawn(f.config)  # with the tree still there: no crash loop
        served(again, f, "after-restart")
        assert again.find("inotify unavailable, polling instead"), again.log
        stopped_cleanly(again)
        assert sorted(p.name for p in f.outbox.glob("*.mp4")) == ["after-restart.mp4", "next.mp4"]
    finally:
        remove(tmp_path / "deep")
        remove(f.inbox / "deep")


def test_a_path_over_path_max_never_pauses_the_inbox(folders: Folders, spawn: Spawn) -> None:
    f = folders
    f.write_config(rescan_s=RESCAN_S, sidecar_grace_s=0.0, watch_mode="poll", poll_interval_s=0.2)
    names = [chr(ord("a") + i) * 250 for i in range(17)]  # 17 nested names of 250 bytes: over 4096
    long = nest(f.inbox, names, "x.png")
    try:
        daemon = spawn(f.config)
        daemon.read_until("watching")
        make_image(f.inbox / "next.png")  # seen by the poller, which the tree cannot stop
        served(daemon, f, "next")
        assert [e["reason"] for e in daemon.find(BEYOND)] == [TOO_LONG], daemon.log
        assert not daemon.find("inbox unavailable: paused until it is back")
        (warning,) = status_warnings(f)
        assert TOO_LONG in warning and len(warning) < 400, warning
        stopped_cleanly(daemon)
    finally:
        remove(long)
