"""The pipelined daemon (pipeline_depth = 2, the default): while one job is post-processed and published,
the next generates. Every promise of the serial daemon holds with jobs in both stages: a crash or a stop
loses nothing and publishes once, the periodic recovery never re-runs a job in flight, `--once` exits
only when both stages are drained, and every log line of a job carries its id, whichever thread wrote
it."""

from __future__ import annotations

import itertools
import signal
from datetime import datetime

from conftest import Folders, decode, make_image

from .conftest import Spawn, hidden, visible

# Generation slow (like a GPU), post-processing slow too (a 1080x1920 encode): both stages busy at once.
SLOW = {"backend": "slow", "plugins": ["slow_backend"]}
SIDECAR = ("num_frames: 4\nseed: {seed}\npostprocess: [vertical-1080x1920]\n"
           "backend_options: {{delay_s: {delay}}}\n")
CLIP_FRAMES = 15  # 4 frames at 8 fps, made 30 fps by the preset


def assert_each_published_once(folders: Folders, names: list[str]) -> None:
    markers = sorted(n for n in visible(folders.outbox) if n.endswith(".json"))
    assert markers == sorted(f"{name}.json" for name in names), markers
    for name in names:
        assert decode(folders.outbox / f"{name}.mp4").frames == CLIP_FRAMES
    assert hidden(folders.outbox) == [] and folders.files("failed") == []
    assert folders.files("work") == [] and folders.files("inbox") == []


def drop_jobs(folders: Folders, names: list[str], delay: float = 0.3) -> None:
    for seed, name in enumerate(names):
        make_image(folders.inbox / f"{name}.png", seed=seed)
        (folders.inbox / f"{name}.yaml").write_text(SIDECAR.format(seed=seed, delay=delay))


def at(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]))


def test_the_next_job_generates_while_the_previous_one_is_encoded(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW, rescan_s=1.0)
    names = ["a", "b", "c", "d"]
    drop_jobs(folders, names)
    daemon = spawn(folders.config, "--once")
    assert daemon.wait(timeout=180) == 0, daemon.log
    assert_each_published_once(folders, names)
    events = daemon.events()
    overlaps = 0
    for first, second in itertools.pairwise(names):
        encoded = next(e for e in events if e["event"] == "encoded" and e.get("job") == first)
        started = next(e for e in events if e["event"] == "progress" and e.get("job") == second)
        overlaps += at(started) < at(encoded)
    assert overlaps >= 2, "the GPU waited for ffmpeg"
    # One generation per job although recoveries ran every second meanwhile: nothing in flight re-ran.
    assert sorted(e["job"] for e in events if e["event"] == "generated") == names
    # Whichever thread logged it, a job's line carries its id, and the worker's.
    for event in events:
        if event["event"] in ("progress", "generated", "encoded", "published"):
            assert event.get("job_id") and event.get("worker_id") == "testhost", event


def test_a_crash_with_jobs_in_both_stages_loses_nothing_and_publishes_once(
        folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW)
    names = ["a", "b", "c"]
    drop_jobs(folders, names)
    crashed = spawn(folders.config)
    frozen = crashed.freeze_on("progress", job="b")  # b generates while a is being encoded
    frozen.wait(120)
    assert not crashed.find("published", job="a")
    crashed.process.kill()
    crashed.wait()
    resumed = spawn(folders.config, "--once")
    assert resumed.wait(timeout=180) == 0, resumed.log
    assert_each_published_once(folders, names)
    assert list((folders.root.parent / "scratch" / "testhost").iterdir()) == []


def test_sigterm_finishes_or_hands_back_the_jobs_of_both_stages(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW, stop_timeout_s=60)
    names = ["a", "b", "c", "d"]
    drop_jobs(folders, names)
    daemon = spawn(folders.config)
    daemon.read_until("progress", job="b", timeout=120)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=120) == 0, daemon.log
    published = sorted(e["job"] for e in daemon.find("published"))
    assert {"a", "b"} <= set(published)  # the two running jobs finished within stop_timeout_s
    waiting = sorted(set(names) - set(published))
    assert sorted(p.stem for p in folders.inbox.glob("*.png")) == waiting  # handed back, not lost
    assert folders.files("work") == []
    again = spawn(folders.config, "--once")
    assert again.wait(timeout=180) == 0, again.log
    assert_each_published_once(folders, names)


def test_a_stop_that_cannot_wait_keeps_both_jobs_for_the_next_start(folders: Folders, spawn: Spawn) -> None:
    folders.write_config(**SLOW, stop_timeout_s=0)
    names = ["a", "b", "c"]
    drop_jobs(folders, names, delay=0.5)
    daemon = spawn(folders.config)
    daemon.read_until("generated", job="a", timeout=120)
    daemon.read_until("progress", job="b", timeout=120)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, daemon.log
    outcomes = {e["event"] for e in daemon.events() if e.get("job") in ("a", "b")}
    assert "stopped: job put back into the inbox" in outcomes or "stopped: job kept in the work dir, " \
        "resumed at the next start" in outcomes
    again = spawn(folders.config, "--once")
    assert again.wait(timeout=180) == 0, again.log
    assert_each_published_once(folders, names)
    generated = [e["job"] for e in daemon.events() + again.events() if e["event"] == "generated"]
    assert generated.count("a") == 1, generated  # a was past generation: resumed from its scratch copy
