"""`cancel` through the command line with a real daemon: a queued job goes to failed/ at once with a
`cancelled` report; a running one stops at its next progress point, nothing published; and a cancel
written while the daemon is frozen, the daemon then killed (-9) and started again, is never lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, Folders, cli, daemon_env, make_image, wait_for

from .conftest import Spawn, visible
from .test_workers import worker_config

SLOW = {"backend": "slow", "plugins": ["slow_backend"]}


def drop_job(folders: Folders, name: str, delay_s: float) -> None:
    (folders.inbox / name).parent.mkdir(parents=True, exist_ok=True)
    make_image(folders.inbox / f"{name}.png", (64, 48))
    (folders.inbox / f"{name}.yaml").write_text(
        f"prompt: {name}\nnum_frames: 8\nbackend_options: {{delay_s: {delay_s}}}\n")


def report(folders: Folders, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((folders.failed / f"{name}.error.json").read_text())
    return data


@pytest.mark.slow
def test_cancel_queued_running_and_around_a_kill(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW)
    config = worker_config(folders, "w0")
    # Queued (no daemon yet): straight to failed/, with who and when.
    for folder in (folders.failed, folders.work):
        folder.mkdir()
    drop_job(folders, "team/fox", 0.0)
    done = cli("cancel", "team/fox", "--config", str(config))
    assert done.returncode == 0 and "team/fox: cancelled by" in done.stdout, done.stderr
    fox = report(folders, "team/fox")
    assert fox["stage"] == "cancelled" and fox["error_class"] == "JobCancelledByOperator", fox
    assert sorted(visible(folders.failed / "team")) == ["fox.error.json", "fox.png", "fox.yaml"]
    assert visible(folders.inbox / "team") == [] and visible(folders.work) == []
    assert cli("cancel", "nosuch", "--config", str(config)).returncode == 2

    # Running: stopped at its next progress point, nothing published.
    daemon = spawn(config)
    drop_job(folders, "hare", 0.5)
    daemon.read_until("claimed", job="hare")
    started = time.monotonic()
    done = cli("cancel", "hare", "--config", str(config))
    assert done.returncode == 0 and "hare: cancelled" in done.stdout, done.stdout + done.stderr
    assert time.monotonic() - started < 15
    assert report(folders, "hare")["stage"] == "cancelled"
    assert not (folders.outbox / "hare.json").exists() and "hare.png" in visible(folders.failed)

    # Around a kill -9: the cancel is written while the daemon is frozen mid-job; the daemon is then
    # killed and started again, and resumes the job only to cancel it.
    drop_job(folders, "owl", 0.5)
    daemon.read_until("claimed", job="owl")
    daemon.process.send_signal(signal.SIGSTOP)
    cancel_owl = [sys.executable, "-m", "i2v_watcher", "cancel", "owl", "--config", str(config)]
    command = subprocess.Popen(cancel_owl, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=daemon_env(), cwd=REPO)
    wait_for(lambda: list(folders.work.glob("w0/*/cancel")), 30, what="the cancel marker written")
    daemon.process.kill()
    daemon.wait()
    daemon = spawn(config)
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0 and "owl: cancelled" in out, out + err
    assert report(folders, "owl")["stage"] == "cancelled" and not (folders.outbox / "owl.json").exists()
    wait_for(lambda: not list(folders.work.glob("w0/2*")), 10, what="the job folder gone")
    assert not (folders.outbox / "owl.json").exists()
