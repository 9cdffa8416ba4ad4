"""A cancel racing a publish, with kill -9 around it, across two daemons on one share: the job's
`publishing` state is the commit point (control.cancel). The owner is killed at a crash point and the
other daemon takes the job over; every job ends in exactly one of published (outbox metadata, inputs
in done/, no report) or cancelled (a `cancelled` report and the inputs in failed/, nothing in the
outbox): never both, never neither, its inputs never lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Folders, cli, daemon_env, make_image, wait_for
from i2v_watcher.control.cancel import cancel_marker

from .conftest import Spawn, hidden, visible
from .test_workers import worker_config

FAST = {"backend": "slow", "plugins": ["slow_backend"], "lease_timeout_s": 2.0, "rescan_s": 1.0}


def drop_job(folders: Folders, name: str) -> None:
    make_image(folders.inbox / f"{name}.png", (64, 48))
    (folders.inbox / f"{name}.yaml").write_text(
        f"prompt: {name}\nnum_frames: 4\nbackend_options: {{delay_s: 0.1}}\n")


def job_dir(folders: Folders, worker: str) -> Path:
    """The one job folder in a worker's folder."""
    (found,) = [p for p in (folders.work / worker).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return found


def cancel(name: str, config: Path) -> subprocess.Popen[str]:
    """`i2v-watcher cancel NAME`, started: it waits for the job's end, which takes a takeover here."""
    command = [sys.executable, "-m", "i2v_watcher", "cancel", name, "--config", str(config)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=daemon_env(), cwd=REPO)


def assert_ended_once(folders: Folders, name: str, published: bool) -> None:
    """Exactly one of the two outcomes, with the inputs where that outcome puts them."""
    def mine(folder: Path) -> list[str]:
        return [n for n in visible(folder) if n.startswith(f"{name}.")] if folder.is_dir() else []

    outbox, failed, done = mine(folders.outbox), mine(folders.failed), mine(folders.done)
    if published:
        assert outbox == [f"{name}.jpg", f"{name}.json", f"{name}.mp4"] and failed == [], (outbox, failed)
        assert done == [f"{name}.png", f"{name}.yaml"], done
    else:
        assert outbox == [] and done == [] and failed == [f"{name}.error.json", f"{name}.png", f"{name}.yaml"]
        report = json.loads((folders.failed / f"{name}.error.json").read_text())
        assert report["stage"] == "cancelled" and report["error_class"] == "JobCancelledByOperator", report
    assert mine(folders.inbox) == [] and hidden(folders.outbox) == []  # no reservation or part left


@pytest.mark.slow
def test_a_cancel_around_a_kill_ends_in_exactly_one_outcome_on_the_other_daemon(
        folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**FAST)
    configs = {worker: worker_config(folders, worker, **FAST) for worker in ("w0", "w1")}

    # Before the commit point: w0 is frozen right after generating `early`, the cancel is written, and
    # w0 then dies at its next crash point (before the encode). w1 takes the job over: cancelled.
    w0 = spawn(configs["w0"], I2V_CRASH_AT="postprocess.before_encode")
    frozen = w0.freeze_on("generated", job="early")
    drop_job(folders, "early")
    wait_for(frozen.is_set, 60, what="w0 frozen after generating")
    assert w0.process.poll() is None  # frozen before its crash point: the cancel comes before the kill
    command = cancel("early", configs["w0"])
    wait_for(lambda: list(folders.work.glob("w0/*/cancel")), 30, what="the cancel marker written")
    w0.resume()
    assert w0.wait() == -9, w0.log
    w1 = spawn(configs["w1"], I2V_CRASH_AT="publish.after_reserve")
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0 and "early: cancelled (was running" in out, out + err
    assert w1.find("took over a job", previous="w0") and not w1.find("published")
    assert_ended_once(folders, "early", published=False)

    # Still before the commit point, the cancel after the kill: w1 dies once its outbox name is
    # reserved, before `publishing`. w0, started again, takes the job over: cancelled, and the name's
    # reservation let go (no `.mid.reserved` left in the outbox).
    drop_job(folders, "mid")
    assert w1.wait() == -9, w1.log
    assert hidden(folders.outbox) == [".mid.reserved"]
    command = cancel("mid", configs["w0"])
    wait_for(lambda: list(folders.work.glob("w1/*/cancel")), 30, what="the cancel marker written")
    w0 = spawn(configs["w0"], I2V_CRASH_AT="publish.after_file")
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0 and "mid: cancelled (was running" in out, out + err
    assert w0.find("took over a job", previous="w1", stage="encoded")
    assert_ended_once(folders, "mid", published=False)

    # Past the commit point: w0 dies between two published files. `cancel` says it is too late and
    # writes nothing; a marker that raced in anyway (written by a cancel that read the state just before
    # `publishing`) changes nothing: w1, started again, takes the job over and finishes the publish;
    # the marker goes with the job's folder.
    drop_job(folders, "late")
    assert w0.wait() == -9, w0.log
    late = job_dir(folders, "w0")
    assert json.loads((late / "job.json").read_text())["stage"] == "publishing"
    assert visible(folders.outbox) and "late.json" not in visible(folders.outbox)
    done = cli("cancel", "late", "--config", str(configs["w0"]))
    assert done.returncode == 1 and done.stdout == (
        "late: too late to cancel, it is being published (on w0); it will be in the outbox, not failed/\n"), (
        done.stdout + done.stderr)
    assert not (late / "cancel").exists()
    cancel_marker(late, "a racing cancel")
    w1 = spawn(configs["w1"])
    w1.read_until("published", job="late")
    wait_for(lambda: not list(folders.work.glob("w*/2*")), 10, what="the job's folder gone, with its marker")
    assert_ended_once(folders, "late", published=True)
    meta = folders.metadata("late")
    assert meta["job_id"] == late.name and meta["worker_id"] == "w1"
    assert [t["from"] for t in meta["takeovers"]] == ["w0"]
