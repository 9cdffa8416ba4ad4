"""Pause, resume and drain in Celery mode, through the command line, with a real redis-server, one `run`
and two `worker`s: a paused worker takes no task and leaves every one in Redis for the others; a
drain lets the running job publish, then ends the worker with 0; a pause of the whole share also
stops `run` claiming from the inbox; a pause survives a kill -9 and a restart; after `resume` every
job is published exactly once. (Folder mode: test_control.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from conftest import Folders, wait_for
from i2v_watcher.config.settings import load_settings
from i2v_watcher.control.pause import resume
from i2v_watcher.work.survey import survey

from .celery_helpers import RedisServer, assert_each_published_once, config, markers, queued_ids, stop_all
from .conftest import LiveDaemon
from .test_control import SLOW, control, drop_job


def launch(processes: list[LiveDaemon], command: str, path: Path) -> LiveDaemon:
    process = LiveDaemon(path, command=command)
    processes.append(process)  # killed at teardown, before the Redis server
    return process


def tasks_in_redis(server: RedisServer, queue: str = "i2v-watcher") -> int:
    """Tasks waiting in the broker's list for the queue (not those a worker holds unacknowledged)."""
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def took(worker: LiveDaemon) -> list[str]:
    return [e["job"] for e in worker.find("took job from the queue")]


@pytest.mark.slow
def test_pause_drain_and_resume_of_celery_workers(folders: Folders, redis_server: RedisServer,
                                                  processes: list[LiveDaemon]) -> None:
    configs = {name: config(folders, redis_server, name, **SLOW) for name in ("disp", "w1", "w2")}
    dispatcher = launch(processes, "run", configs["disp"])
    workers = {name: launch(processes, "worker", configs[name]) for name in ("w1", "w2")}
    for worker in workers.values():
        worker.read_until("consuming")

    # One worker paused: the other takes every job; drained while it runs one, it publishes it, exits 0.
    assert "in force on w1" in control(folders, "pause", "--worker", "w1")
    drop_job(folders, "a")
    drop_job(folders, "b", delay_s=0.5)
    workers["w2"].read_until("took job from the queue", job="b")
    assert "draining worker w2 (in force on w2)" in control(folders, "drain", "--worker", "w2")
    assert workers["w2"].wait(30) == 0
    assert markers(folders) == ["a.json", "b.json"] and took(workers["w1"]) == []
    assert workers["w2"].find("drained: every job of this worker is finished, exiting (the pause stays "
                              "until `i2v-watcher resume`)")

    # Every worker paused or gone: the tasks wait in Redis. The whole share paused: `run` claims nothing.
    drop_job(folders, "c")
    drop_job(folders, "d")
    wait_for(lambda: tasks_in_redis(redis_server) == 2, 30, what="the tasks of c and d in Redis")
    assert "in force on w1, queue" in control(folders, "pause")
    drop_job(folders, "e")

    # kill -9 the paused worker; it and the drained one start again paused, and take nothing.
    workers["w1"].process.kill()
    workers["w1"].wait()
    workers = {name: launch(processes, "worker", configs[name]) for name in ("w1", "w2")}
    for worker in workers.values():
        worker.read_until("paused by an operator: claiming nothing")
    time.sleep(1.0)  # a tick and a loop turn of each, a settle_s of e
    assert sorted(queued_ids(folders)) == ["c", "d"] and tasks_in_redis(redis_server) == 2
    assert (folders.inbox / "e.png").exists() and not [took(w) for w in workers.values() if took(w)]
    settings = load_settings(configs["disp"])
    assert {row.worker_id: row.activity for row in survey(settings, queue=True)} == {
        "queue": "paused", "w1": "paused", "w2": "paused"}

    # Resumed: every job published exactly once.
    for whom in (None, "w1", "w2"):
        assert resume(settings, whom)
    wait_for(lambda: len(markers(folders)) == 5, 30, what="c, d and e published after the resume")
    stop_all(dispatcher, *workers.values())
    assert_each_published_once(folders, ["a", "b", "c", "d", "e"])
    assert sorted(took(workers["w1"]) + took(workers["w2"])) == ["c", "d", "e"]
