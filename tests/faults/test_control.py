"""Pause, resume and drain through the command line, with two real daemons on one share: a paused
worker claims nothing and says so (heartbeat, `status`), a pause survives a kill -9 and a restart
until `resume`, and a drain lets the running job publish, then the daemons exit 0, leaving the pause.
(`run --once` under a pause and a drain: test_systemd.py, which also reads what it tells systemd.)"""

from __future__ import annotations

import json
import time

import pytest

from conftest import Folders, cli, make_image, wait_for
from i2v_watcher.config.settings import load_settings
from i2v_watcher.control.pause import pause
from i2v_watcher.work.lease import read_heartbeat

from .conftest import LiveDaemon, Spawn, visible
from .test_workers import worker_config

SLOW = {"backend": "slow", "plugins": ["slow_backend"]}


def drop_job(folders: Folders, name: str, delay_s: float = 0.0) -> None:
    make_image(folders.inbox / f"{name}.png", (64, 48))
    (folders.inbox / f"{name}.yaml").write_text(
        f"prompt: {name}\nnum_frames: 4\nbackend_options: {{delay_s: {delay_s}}}\n")


def control(folders: Folders, *args: str) -> str:
    result = cli(*args, "--config", str(folders.config))
    assert result.returncode == 0, result.stderr
    return result.stdout


def claimed_by(daemon: LiveDaemon) -> list[str]:
    return [e["job"] for e in daemon.find("claimed")]


@pytest.mark.slow
def test_pause_resume_drain_across_two_daemons_and_a_kill(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW)
    configs = {worker: worker_config(folders, worker) for worker in ("w0", "w1")}
    daemons = {worker: spawn(config) for worker, config in configs.items()}
    for daemon in daemons.values():
        daemon.read_until("watching")

    # One worker paused: the other takes every job.
    assert "in force on w1" in control(folders, "pause", "--worker", "w1")
    assert read_heartbeat(folders.work / "w1")["paused"] is True
    drop_job(folders, "a")
    drop_job(folders, "b")
    wait_for(lambda: {"a.json", "b.json"} <= set(visible(folders.outbox)), 30, what="a and b published")
    assert sorted(claimed_by(daemons["w0"])) == ["a", "b"] and claimed_by(daemons["w1"]) == []
    status = json.loads(control(folders, "status", "--json"))
    assert {w["worker_id"]: w["activity"] for w in status["workers"]} == {"w0": "idle", "w1": "paused"}
    assert status["paused"]["w1"]["by"]

    # The whole share paused: nothing is claimed, even by a worker killed and started again.
    assert "in force on w0, w1" in control(folders, "pause")
    drop_job(folders, "c")
    daemons["w0"].process.kill()
    daemons["w0"].wait()
    daemons["w0"] = spawn(configs["w0"])
    daemons["w0"].read_until("paused by an operator: claiming nothing")
    time.sleep(1.0)  # more than two loop turns and a settle_s
    assert "c.png" in visible(folders.inbox) and "PAUSED" in control(folders, "status")

    assert "resumed every worker" in control(folders, "resume")
    wait_for(lambda: "c.json" in visible(folders.outbox), 30, what="c published after resume")
    assert claimed_by(daemons["w0"]) == ["c"] and claimed_by(daemons["w1"]) == []  # w1 still paused

    # Drain while a job runs: it is published, then both daemons exit 0; the pause stays.
    control(folders, "resume", "--worker", "w1")
    drop_job(folders, "d", delay_s=0.4)
    wait_for(lambda: any(d.find("claimed", job="d") for d in daemons.values()), 30, what="d claimed")
    assert "draining every worker" in control(folders, "drain")
    assert [daemon.wait(30) for daemon in daemons.values()] == [0, 0]
    assert "d.json" in visible(folders.outbox) and not visible(folders.inbox)
    # Started again (after the reboot the drain was for): alive, and still paused.
    again = spawn(configs["w0"])
    again.read_until("paused by an operator: claiming nothing")
    drop_job(folders, "e")
    time.sleep(1.0)
    assert again.process.poll() is None and "e.png" in visible(folders.inbox)


@pytest.mark.slow
def test_priority_reorders_a_queued_job_without_its_sidecar(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW)
    for name in ("a", "b", "c"):
        drop_job(folders, name)
        time.sleep(0.02)  # arrival order: a, b, c
    sidecar = (folders.inbox / "c.yaml").read_bytes()
    assert "c: priority 5; its place in the queue: 1 of 3 ready" in control(folders, "priority", "c", "5")
    assert (folders.inbox / "c.yaml").read_bytes() == sidecar
    assert cli("priority", "nosuch", "1", "--config", str(folders.config)).returncode == 2
    daemon = spawn(folders.config, "--once")
    assert daemon.wait(60) == 0
    assert claimed_by(daemon) == ["c", "a", "b"]
    assert not list((folders.work / ".control" / "priority").iterdir())  # forgotten once claimed



@pytest.mark.slow
def test_a_drain_written_while_the_models_load_ends_that_daemon(folders: Folders, spawn: Spawn) -> None:
    """The drain is for the daemons running when it came, and one still loading its model is running:
    it exits once loaded and idle, instead of staying paused as a daemon started after the drain."""
    folders.write_config(backend="slow-load", plugins=["slow_load"])
    daemon = spawn(folders.config, SLOW_LOAD_S="2")
    daemon.read_until("ffmpeg found")  # before the backend loads
    pause(load_settings(folders.config), drain=True)
    drop_job(folders, "a")
    assert daemon.wait(30) == 0
    assert daemon.find("paused by an operator: claiming nothing", draining=True)
    assert not daemon.find("claimed") and "a.png" in visible(folders.inbox)
