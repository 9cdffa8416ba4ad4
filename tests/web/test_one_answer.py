"""`status --json`, the dashboard's /api/status and its /metrics give one answer at one moment: the
same liveness for a worker (a real daemon, frozen with SIGSTOP past lease_timeout_s) and the same
count of queued jobs (an inbox with a lone sidecar, a pair, a bare image and litter)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import Daemon, Folders, cli, make_image, wait_for
from web.conftest import WebServer
from web.test_web_metrics import scrape

LEASE_S = 6.0  # one beat a second: late after 2 s, stale after 6 s
ALIVE = ("alive", "alive", "alive", 1.0)


def status(folders: Folders) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli("status", "--json", "--config", str(folders.config),
                                            check=True).stdout)
    return result


def api(server: WebServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/api/status", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def states(folders: Folders, server: WebServer, worker_id: str = "testhost") -> tuple[str, str, str, float]:
    """The worker's state in status, /api/status and /metrics (its i2v_worker_state series that is 1),
    and its i2v_worker_up."""
    shown = {w["worker_id"]: w["state"] for w in status(folders)["workers"]}[worker_id]
    served = {w["worker_id"]: w["state"] for w in api(server)["workers"]}[worker_id]
    metrics = scrape(server)
    [scraped] = [dict(labels)["state"] for (name, labels), value in metrics.items()
                 if name == "i2v_worker_state" and dict(labels)["worker_id"] == worker_id and value == 1.0]
    return shown, served, scraped, metrics[("i2v_worker_up", (("worker_id", worker_id),))]


def test_a_frozen_worker_reads_the_same_everywhere(folders: Folders, start: Callable[..., Daemon],
                                                   web: Callable[..., WebServer]) -> None:
    folders.write_config(lease_timeout_s=LEASE_S)
    daemon = start(folders.config)
    wait_for(lambda: (folders.work / "testhost" / "heartbeat.json").exists(), 30, "the daemon's heartbeat")
    server = web()
    # (a beat is due every second: on a loaded machine one may come late, so this may take two looks)
    wait_for(lambda: states(folders, server) == ALIVE, 15, "all three to agree: alive")

    os.kill(daemon.process.pid, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        time.sleep(LEASE_S + 0.5)
        assert states(folders, server) == ("stale", "stale", "stale", 0.0)
        [worker] = status(folders)["workers"]
        assert worker["process"] == "frozen" and worker["heartbeat_age_s"] >= LEASE_S
        # measured on the share's clock, it is the time since the last beat before the freeze
        assert worker["heartbeat_age_s"] <= time.monotonic() - frozen_at + 2.5
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
    wait_for(lambda: states(folders, server) == ALIVE, 30,
             "all three to see the worker alive again")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.log
    # (the dashboard may serve a snapshot up to board.REFRESH_S old)
    wait_for(lambda: states(folders, server) == ("stopped", "stopped", "stopped", 0.0), 5,
             "all three to see the worker stopped")


def test_one_count_of_queued_jobs(folders: Folders, web: Callable[..., WebServer]) -> None:
    inbox = folders.inbox
    (inbox / "lone.yaml").write_text("prompt: an image is on its way\n")  # waited for, then failed/
    make_image(inbox / "pair.png")
    (inbox / "pair.yaml").write_text("prompt: a fox\n")
    make_image(inbox / "bare.png", seed=1)
    (inbox / "notes.txt").write_text("not a job's file: taken into failed/ with a report, so queued\n")
    litter = [".DS_Store", ".hidden.png", "upload.png.part", "~$draft.png", "Thumbs.db", "x.tmp"]
    for name in litter:
        (inbox / name).write_bytes(b"litter")
    (inbox / "empty").mkdir()
    (inbox / "folder").mkdir()
    (inbox / "folder" / ".DS_Store").write_bytes(b"litter")
    server = web()

    expected = ["bare.png", "lone.yaml", "notes.txt", "pair.png"]
    for _ in range(2):  # at once, and once the files settled and the grace periods ran out
        shown = status(folders)
        served = api(server)
        scraped = scrape(server)[("i2v_queued_jobs", ())]
        assert sorted(shown["queued"]) == expected
        assert shown["counts"]["queued"] == served["counts"]["queued"] == scraped == len(expected)
        assert sorted(row["job"] for row in served["queue"]) == ["bare", "lone", "notes.txt", "pair"]
        time.sleep(1.5)  # settle_s, sidecar_grace_s and orphan_sidecar_s of the test config
