"""Many workers on one inbox, coordinated through the shared folders alone: leases and takeover.

Every case ends with every input accounted for exactly once (one published clip or one report), no
partial file in the outbox and no job left in work/."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from conftest import Folders, cli, decode, make_image, wait_for, write_toml

from .conftest import LiveDaemon, Spawn, drop, hidden, visible

SLOW = {"backend": "slow", "plugins": ["slow_backend"]}
TOOK_OVER = "took over a job"
LOST = ("another worker took this job over (this one was frozen or cut off past its lease): dropped "
        "here, without publishing or reporting anything")


def worker_config(folders: Folders, worker_id: str | None, **changes: object) -> Path:
    """The shared config with this worker's id (None: the default, unique per daemon on a host)."""
    settings = {**folders.settings, **changes}
    if worker_id is None:
        settings.pop("worker_id", None)
    else:
        settings["worker_id"] = worker_id
    taken = len(list(folders.config.parent.glob("*.toml")))
    config = folders.config.with_name(f"{worker_id or 'default'}-{taken}.toml")
    write_toml(config, settings)
    return config


def assert_each_published_once(folders: Folders, names: list[str]) -> None:
    markers = sorted(n for n in visible(folders.outbox) if n.endswith(".json"))
    assert markers == sorted(f"{name}.json" for name in names), markers
    for name in names:
        meta = folders.metadata(name)
        assert decode(folders.outbox / f"{name}.mp4").frames == meta["parameters"]["num_frames"]
    assert hidden(folders.outbox) == [] and folders.files("failed") == []
    assert folders.files("work") == [] and folders.files("inbox") == []


def test_an_explicit_worker_id_held_by_a_live_daemon_is_refused(folders: Folders, spawn: Spawn) -> None:
    first = spawn(folders.config)
    first.read_until("watching")
    second = spawn(folders.config, "--once")
    assert second.wait() == 2
    assert "held by a live daemon" in second.log
    first.signal(signal.SIGTERM)
    assert first.wait() == 0


def test_default_worker_ids_are_unique_per_daemon_and_every_job_is_done_once(
        folders: Folders, spawn: Spawn) -> None:
    names = drop(folders, 12)
    configs = [worker_config(folders, None) for _ in range(3)]
    daemons = [spawn(config, "--once") for config in configs]
    assert [d.wait(timeout=120) for d in daemons] == [0, 0, 0]
    ids = [d.find("watching")[0]["worker_id"] for d in daemons]
    assert len(set(ids)) == 3, ids  # the host name, then -2, -3
    assert_each_published_once(folders, names)
    worked = {folders.metadata(n)["worker_id"] for n in names}
    assert len(worked) >= 2, worked  # the work was shared


def test_a_killed_worker_that_never_comes_back_is_taken_over(folders: Folders, spawn: Spawn) -> None:
    fast_lease = {"lease_timeout_s": 2.0, "rescan_s": 1.0, **SLOW}
    (name,) = drop(folders, 1, "num_frames: 6\nbackend_options: {delay_s: 0.5}\n")
    doomed = spawn(worker_config(folders, "w1", **fast_lease))
    doomed.read_until("progress")
    doomed.process.kill()
    doomed.wait()
    (job_dir,) = [p for p in (folders.work / "w1").iterdir() if p.is_dir()]
    rescuer = spawn(worker_config(folders, "w2", **fast_lease))
    took = rescuer.read_until(TOOK_OVER, timeout=30)
    assert took["previous"] == "w1" and took["job_id"] == job_dir.name
    rescuer.read_until("published", timeout=60)
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0
    assert_each_published_once(folders, [name])
    meta = folders.metadata(name)
    assert meta["job_id"] == job_dir.name and meta["worker_id"] == "w2"
    assert [t["from"] for t in meta["takeovers"]] == ["w1"]


def test_a_frozen_worker_that_comes_back_drops_what_it_lost(folders: Folders, spawn: Spawn) -> None:
    fast_lease = {"lease_timeout_s": 2.0, "rescan_s": 1.0, **SLOW}
    (name,) = drop(folders, 1, "num_frames: 8\nbackend_options: {delay_s: 0.3}\n")
    sleeper = spawn(worker_config(folders, "w1", **fast_lease))
    frozen = sleeper.freeze_on("progress")
    assert frozen.wait(60)
    rescuer = spawn(worker_config(folders, "w2", **fast_lease))
    rescuer.read_until("published", timeout=60)
    sleeper.resume()  # back from SIGSTOP, mid-generation of a job it no longer owns
    sleeper.read_until(LOST, timeout=30)
    time.sleep(1.0)  # whatever it would still do, it has had the time to do
    for daemon in (sleeper, rescuer):
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log
    assert_each_published_once(folders, [name])
    assert not sleeper.find("published") and not sleeper.find("failed")


def test_several_workers_on_forty_jobs_each_job_once(folders: Folders, spawn: Spawn) -> None:
    names = drop(folders, 40, "num_frames: 3\nresolution: 32p\n")
    daemons = [spawn(worker_config(folders, f"w{index}"), "--once") for index in range(4)]
    assert [d.wait(timeout=240) for d in daemons] == [0, 0, 0, 0]
    assert_each_published_once(folders, names)
    published = [e["job"] for d in daemons for e in d.find("published")]
    assert sorted(published) == sorted(names)  # each by exactly one worker


def test_ten_jobs_with_one_output_name_across_three_workers(folders: Folders, spawn: Spawn) -> None:
    for index in range(10):
        make_image(folders.inbox / f"j{index}.png", seed=index)
        (folders.inbox / f"j{index}.yaml").write_text(f"output_name: same\nnum_frames: {2 + index}\n")
    daemons = [spawn(worker_config(folders, f"w{index}"), "--once") for index in range(3)]
    assert [d.wait(timeout=120) for d in daemons] == [0, 0, 0]
    markers = [n for n in visible(folders.outbox) if n.endswith(".json")]
    assert len(markers) == 10 and hidden(folders.outbox) == []
    assert sorted({json.loads((folders.outbox / m).read_text())["parameters"]["num_frames"]
                   for m in markers}) == list(range(2, 12))
    for marker in markers:
        meta = json.loads((folders.outbox / marker).read_text())
        assert decode(folders.outbox / f"{meta['name']}.mp4").frames == meta["parameters"]["num_frames"]


def test_sigterm_with_several_workers_finishes_or_hands_back(folders: Folders, spawn: Spawn) -> None:
    names = drop(folders, 4, "num_frames: 6\nbackend_options: {delay_s: 0.3}\n")
    daemons: list[LiveDaemon] = [spawn(worker_config(folders, f"w{index}", **SLOW, stop_timeout_s=0.5))
                                 for index in range(2)]
    for daemon in daemons:
        daemon.read_until("progress", timeout=60)
    started = time.monotonic()
    for daemon in daemons:
        daemon.signal(signal.SIGTERM)
    assert [d.wait(timeout=30) for d in daemons] == [0, 0]
    assert time.monotonic() - started < 15
    finish = spawn(worker_config(folders, "w9", **SLOW), "--once")  # takes over what the stopped kept
    assert finish.wait(timeout=120) == 0
    assert_each_published_once(folders, names)


def test_status_shows_every_worker_and_what_it_does(folders: Folders, spawn: Spawn) -> None:
    drop(folders, 1, "num_frames: 40\nbackend_options: {delay_s: 0.2}\n")
    busy = spawn(worker_config(folders, "w1", **SLOW))
    busy.read_until("progress")
    (folders.work / "ghost").mkdir(parents=True)  # a worker folder without a heartbeat

    def shown() -> dict[str, dict[str, object]] | None:
        result = cli("status", "--config", str(folders.config), "--json", check=True)
        found = {w["worker_id"]: w for w in json.loads(result.stdout)["workers"]}
        return found if found["w1"].get("job") == "job00" else None

    workers = wait_for(shown, 20, "status to show the job of w1")
    assert workers["w1"]["state"] == "alive", workers
    assert workers["w1"]["stage"] == "generate" and workers["w1"]["total"] == 40
    assert workers["ghost"]["state"] == "unknown"
    text = cli("status", "--config", str(folders.config), check=True).stdout
    assert "w1  alive on" in text and "job00 [generate" in text
    busy.signal(signal.SIGTERM)
    assert busy.wait() == 0
    result = cli("status", "--config", str(folders.config), "--json", check=True)
    assert {w["worker_id"]: w["state"] for w in json.loads(result.stdout)["workers"]}["w1"] == "stopped"
