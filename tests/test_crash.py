"""Nothing lost, nothing published twice: kill -9 at every instant that matters, SIGTERM, restart."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest

from conftest import Daemon, Folders, decode, make_image, wait_for

Start = Callable[..., Daemon]
SLOW = {"backend": "slow", "plugins": ["slow_backend"]}


def drop_job(folders: Folders, name: str = "a", sidecar: str = "num_frames: 5\nseed: 11\n") -> None:
    make_image(folders.inbox / f"{name}.png")
    (folders.inbox / f"{name}.yaml").write_text(sidecar)


def assert_published_once(folders: Folders, name: str = "a") -> dict[str, object]:
    assert sorted(folders.files("outbox")) == [f"{name}.jpg", f"{name}.json", f"{name}.mp4"]
    assert folders.files("done") == [f"{name}.png", f"{name}.yaml"]
    assert folders.files("inbox") == [] and folders.files("work") == [] and folders.files("failed") == []
    assert decode(folders.outbox / f"{name}.mp4").frames == 5
    meta = folders.metadata(name)
    return meta


@pytest.mark.parametrize("point", [
    "claim.before_rename", "claim.after_rename", "publish.after_reserve", "publish.after_file",
    "publish.after_metadata", "dispose.after_move",
])
def test_crash_at_any_instant_then_restart_publishes_exactly_once(folders: Folders, start: Start,
                                                                  point: str) -> None:
    drop_job(folders)
    crashed = start(folders.config, "--once", I2V_CRASH_AT=point)
    assert crashed.wait() == -signal.SIGKILL, crashed.log
    left = folders.jobs_in_work()
    assert left, "the crash left the job in the work folder"
    claimed_id = json.loads((left[0] / "job.json").read_text())["job_id"]
    assert start(folders.config, "--once").wait() == 0
    meta = assert_published_once(folders)
    if point != "claim.before_rename":
        assert meta["job_id"] == claimed_id  # resumed, not claimed again
    assert meta["seed"] == 11


def test_crash_while_failing_a_job_still_ends_in_failed(folders: Folders, start: Start) -> None:
    (folders.inbox / "bad.png").write_bytes(b"garbage")
    (folders.inbox / "bad.yaml").write_text("prompt: x\n")
    assert start(folders.config, "--once", I2V_CRASH_AT="fail.after_move").wait() == -signal.SIGKILL
    assert start(folders.config, "--once").wait() == 3  # the resumed job ended in failed/ in this run
    assert folders.files("failed") == ["bad.error.json", "bad.png", "bad.yaml"]
    assert folders.files("work") == [] and folders.files("inbox") == []


def test_kill_9_during_generation_resumes_the_same_job(folders: Folders, start: Start) -> None:
    folders.write_config(**SLOW)
    drop_job(folders)
    daemon = start(folders.config)
    wait_for(lambda: folders.jobs_in_work(), what="the job to be claimed")
    daemon.read_until("progress")
    daemon.kill()
    (job_dir,) = folders.jobs_in_work()
    job_id = json.loads((job_dir / "job.json").read_text())["job_id"]
    assert start(folders.config, "--once").wait() == 0
    assert assert_published_once(folders)["job_id"] == job_id


def sigterm_during_a_slow_job(folders: Folders, start: Start, stop_timeout_s: float) -> Daemon:
    folders.write_config(**SLOW, stop_timeout_s=stop_timeout_s)
    drop_job(folders)
    daemon = start(folders.config)
    wait_for(lambda: folders.jobs_in_work(), what="the job to be claimed")
    # Running, not only claimed: a job claimed ahead but not started yet is put back at a stop, which
    # a SIGTERM sent the instant it appeared in work/ could hit on a loaded machine.
    daemon.read_until("progress")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    return daemon


def test_sigterm_lets_the_running_job_finish(folders: Folders, start: Start) -> None:
    sigterm_during_a_slow_job(folders, start, stop_timeout_s=60)
    assert_published_once(folders)


def test_sigterm_past_stop_timeout_puts_the_job_back(folders: Folders, start: Start) -> None:
    daemon = sigterm_during_a_slow_job(folders, start, stop_timeout_s=0.3)
    assert folders.files("inbox") == ["a.png", "a.yaml"]  # back where the user dropped it, untouched
    assert folders.files("outbox") == [] and folders.files("work") == []
    assert any(e["event"] == "stopped: job put back into the inbox" for e in daemon.events())
    folders.write_config(backend="preview")
    assert start(folders.config, "--once").wait() == 0
    assert_published_once(folders)


def test_a_second_signal_aborts_at_once(folders: Folders, start: Start) -> None:
    folders.write_config(**SLOW, stop_timeout_s=600)
    drop_job(folders, sidecar="num_frames: 5\nseed: 11\nbackend_options: {delay_s: 1.0}\n")
    daemon = start(folders.config)
    wait_for(lambda: folders.jobs_in_work(), what="the job to be claimed")
    daemon.signal(signal.SIGTERM)
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=10) == 0
    assert folders.files("inbox") == ["a.png", "a.yaml"] and folders.files("outbox") == []
