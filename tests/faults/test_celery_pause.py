"""Pause, resume and drain in Celery mode, with a real redis-server, one `run` and two `worker`s: a
paused worker takes no task and leaves every one in Redis for the others; a drain hands back to
Redis the task waiting for the worker's stages, lets its running jobs publish, then ends it with 0;
`pause` of the whole share (the command) also stops `run` claiming from the inbox; a pause survives
a kill -9 and a restart (systemd's STATUS says PAUSED); after `resume` every job is published
exactly once. (Folder mode: test_control.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from conftest import Folders, make_image, wait_for
from i2v_watcher.config.settings import load_settings
from i2v_watcher.control.pause import resume
from i2v_watcher.ops.control import pause_and_wait
from i2v_watcher.work.survey import survey

from .celery_helpers import RedisServer, assert_each_published_once, config, markers, queued_ids
from .conftest import LiveDaemon
from .test_celery import VERTICAL, VERTICAL_FRAMES
from .test_control import SLOW, control, drop_job
from .test_systemd import Datagrams, statuses


def launch(processes: list[LiveDaemon], command: str, path: Path, **env: str) -> LiveDaemon:
    process = LiveDaemon(path, command=command, **env)
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
                                                  processes: list[LiveDaemon], tmp_path: Path) -> None:
    configs = {name: config(folders, redis_server, name, **SLOW) for name in ("disp", "w1", "w2")}
    settings = load_settings(configs["disp"])  # for the controls in-process where the command is tested
    dispatcher = launch(processes, "run", configs["disp"])
    workers = {name: launch(processes, "worker", configs[name]) for name in ("w1", "w2")}
    for worker in workers.values():
        worker.read_until("consuming")

    # One worker paused: the other takes every job. Drained while its stages are full (the encode is
    # slow) and a third task waits for a slot: that task goes back to Redis, the two jobs it runs are
    # published, it exits 0.
    assert pause_and_wait(settings, "w1").confirmed == ["w1"]  # the command itself: the whole share's
    for name in ("a", "b", "c"):
        make_image(folders.inbox / f"{name}.png", (64, 48))
        (folders.inbox / f"{name}.yaml").write_text(VERTICAL.replace("delay_s: 0.3", "delay_s: 0.02"))
    waiting = workers["w2"].read_until("the stages are full: the task waits for a free slot, its job in the "
                                       "queue", timeout=60)
    assert pause_and_wait(settings, "w2", drain=True).confirmed == ["w2"]
    assert workers["w2"].wait(60) == 0
    assert workers["w2"].find("paused: the task goes back to the queue, for another worker",
                              job_id=waiting["job_id"])
    assert workers["w2"].find("drained: every job of this worker is finished, exiting (the pause stays "
                              "until `i2v-watcher resume`)")
    first = [m.removesuffix(".json") for m in markers(folders)]
    assert len(first) == 2 and took(workers["w1"]) == []
    assert list(queued_ids(folders).values()) == [waiting["job_id"]] and tasks_in_redis(redis_server) == 1

    # Every worker paused or gone: the tasks wait in Redis. The whole share paused: `run` claims nothing.
    drop_job(folders, "d")
    wait_for(lambda: tasks_in_redis(redis_server) == 2, 30, what="the task of d in Redis")
    assert "in force on w1, queue" in control(folders, "pause")
    drop_job(folders, "e")

    # kill -9 the paused worker: started again, it is still paused (systemd's STATUS too), takes nothing.
    workers["w1"].process.kill()
    workers["w1"].wait()
    notify = Datagrams(tmp_path / "notify.sock")
    workers["w1"] = launch(processes, "worker", configs["w1"], NOTIFY_SOCKET=str(notify.path))
    workers["w1"].read_until("paused by an operator: claiming nothing")
    wait_for(lambda: any("PAUSED (claims nothing new" in s for s in statuses(notify)), 10,
             what="PAUSED in systemd's STATUS")
    notify.close()
    time.sleep(0.5)  # with the waits above: ticks of the worker, turns of `run`, a settle_s of e
    assert len(queued_ids(folders)) == 2 and tasks_in_redis(redis_server) == 2
    assert (folders.inbox / "e.png").exists() and took(workers["w1"]) == []
    assert dispatcher.find("paused by an operator: claiming nothing")
    assert not dispatcher.find("claimed", job="e")
    assert {row.worker_id: row.activity for row in survey(settings, queue=True)} == {
        "queue": "paused", "w1": "paused", "w2": "stopped"}

    # Resumed: every job published exactly once (the processes are killed at the end: a stop is tested
    # in test_celery.py).
    for whom in (None, "w1"):
        assert resume(settings, whom)
    wait_for(lambda: len(markers(folders)) == 5, 30, what="c, d and e published after the resume")
    assert_each_published_once(folders, ["a", "b", "c", "d", "e"], dict.fromkeys("abc", VERTICAL_FRAMES))
    assert sorted(took(workers["w1"])) == sorted({"a", "b", "c", "d", "e"} - set(first))
