"""coordination = "celery": `run` watches and enqueues, `worker`s process, through a real redis-server.

Every case ends with every input published exactly once (one `.json` marker per input, each clip
decoding, nothing in failed/), and no job folder left in work/: the queue may lose or repeat tasks,
the folders keep the promise."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_metrics import jobs, scrape, value

from conftest import Folders, cli, decode, make_image, wait_for
from i2v_watcher.control.cancel import cancel_marker

from .celery_helpers import (
    RedisServer,
    assert_each_published_once,
    config,
    free_port,
    job_folders,
    markers,
    queued_ids,
    stop_all,
)
from .conftest import LiveDaemon as Process
from .conftest import drop

SLOW = {"backend": "slow", "plugins": ["slow_backend"]}
Start = Callable[..., Process]


@pytest.fixture
def start(processes: list[Process]) -> Start:
    def _start(command: str, config: Path, *args: str) -> Process:
        process = Process(config, *args, command=command)
        processes.append(process)
        return process
    return _start


def test_one_run_and_two_workers_publish_every_job_once(folders: Folders, redis_server: RedisServer,
                                                         start: Start) -> None:
    names = drop(folders, 20)
    dispatcher = start("run", config(folders, redis_server, "disp"))
    workers = [start("worker", config(folders, redis_server, w)) for w in ("w1", "w2")]
    wait_for(lambda: len(markers(folders)) == len(names), timeout=60, what="every job published")
    stop_all(dispatcher, *workers)
    assert_each_published_once(folders, names)
    assert len(dispatcher.find("enqueued")) == len(names)
    assert not dispatcher.find("published")  # `run` never generates in celery mode
    done = {w.find("consuming")[0]["worker_id"]: len(w.find("published")) for w in workers}
    assert sum(done.values()) == len(names) and all(done.values()), done  # shared, each job once
    assert {folders.metadata(n)["worker_id"] for n in names} == {"w1", "w2"}


def test_redis_restarted_mid_run_loses_no_job(folders: Folders, redis_server: RedisServer,
                                              start: Start) -> None:
    names = drop(folders, 20)
    dispatcher = start("run", config(folders, redis_server, "disp"))
    workers = [start("worker", config(folders, redis_server, w)) for w in ("w1", "w2")]
    wait_for(lambda: len(markers(folders)) >= 3, timeout=60, what="a few jobs published")
    redis_server.kill()  # every queued task, and the record of them, is gone
    queued_at_kill = [p.name for p in (folders.work / "queue").iterdir() if p.is_dir()]
    time.sleep(1.0)
    redis_server.start()
    wait_for(lambda: len(markers(folders)) == len(names), timeout=60, what="every job published")
    stop_all(dispatcher, *workers)
    assert_each_published_once(folders, names)
    assert queued_at_kill, "the kill came too late to lose any queued task"
    assert dispatcher.find("queued jobs sent again")


def test_a_worker_killed_mid_job_is_taken_over_and_the_job_published_once(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    names = drop(folders, 4, "num_frames: 6\nbackend_options: {delay_s: 0.25}\n")
    fast = {**SLOW, "progress_log_s": 0.0}
    dispatcher = start("run", config(folders, redis_server, "disp", **fast))
    doomed = start("worker", config(folders, redis_server, "w1", **fast))
    taken = doomed.read_until("took job from the queue")
    doomed.read_until("progress", job_id=taken["job_id"])
    doomed.process.kill()  # SIGKILL: its task stays unacknowledged, its lease stops
    doomed.wait()
    assert (folders.work / "w1" / taken["job_id"]).is_dir()
    rescuer = start("worker", config(folders, redis_server, "w2", **fast))
    wait_for(lambda: len(markers(folders)) == len(names), timeout=60, what="every job published")
    stop_all(dispatcher, rescuer)
    assert_each_published_once(folders, names)
    took = [e for p in (dispatcher, rescuer) for e in p.find("took over a job")]
    assert [(e["job_id"], e["previous"]) for e in took] == [(taken["job_id"], "w1")]
    meta = folders.metadata(taken["job"])
    assert meta["job_id"] == taken["job_id"] and meta["worker_id"] == "w2"
    assert [t["from"] for t in meta["takeovers"]] == ["w1"]


def test_a_redelivered_task_takes_the_job_over_from_a_dead_worker(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    """Without `run` (which also moves a dead worker's jobs back into the queue), the broker's own
    redelivery after the visibility timeout brings the job to another worker, which takes it over."""
    (name,) = drop(folders, 1, "num_frames: 6\nbackend_options: {delay_s: 0.5}\n")
    fast = {**SLOW, "progress_log_s": 0.0, "lease_timeout_s": 2.0, "visibility_timeout_s": 5.0}
    dispatcher = start("run", config(folders, redis_server, "disp", **fast))
    dispatcher.read_until("enqueued")
    stop_all(dispatcher)
    doomed = start("worker", config(folders, redis_server, "w1", **fast))
    taken = doomed.read_until("took job from the queue")
    doomed.read_until("progress")
    doomed.process.kill()
    doomed.wait()
    rescuer = start("worker", config(folders, redis_server, "w2", **fast))
    took = rescuer.read_until("took over a job", timeout=30)
    assert took["job_id"] == taken["job_id"] and took["previous"] == "w1"
    rescuer.read_until("published", timeout=30)
    stop_all(rescuer)
    assert_each_published_once(folders, [name])
    assert [t["from"] for t in folders.metadata(name)["takeovers"]] == ["w1"]


def test_worker_needs_celery_coordination_and_check_config_hides_the_password(
        folders: Folders, redis_server: RedisServer) -> None:
    result = cli("worker", "--config", str(folders.config))
    assert result.returncode == 2 and "takes jobs from a Celery queue" in result.stderr
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    checked = cli("check-config", str(config(folders, redis_server, "w1", broker_url=url)))
    assert checked.returncode == 0, checked.stderr
    masked = f'"redis://:**@127.0.0.1:{redis_server.port}/0"'
    assert "s3cret" not in checked.stdout and masked in checked.stdout


def test_a_worker_serves_its_metrics_and_run_sharing_its_config_does_not(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    port = free_port()  # one config for both: `run` dispatches, runs no job, and opens no port
    names = drop(folders, 1)
    dispatcher = start("run", config(folders, redis_server, "disp", metrics_port=port))
    worker = start("worker", config(folders, redis_server, "w1", metrics_port=port))

    def published() -> float:
        with contextlib.suppress(OSError):  # the worker is still starting
            return jobs(scrape(port), "published")
        return 0.0

    wait_for(lambda: published() == 1, timeout=60, what="the worker's published job counted")
    samples = scrape(port)
    assert value(samples, "i2v_worker_info", worker_id="w1", backend="preview") == 1
    assert value(samples, "i2v_stage_seconds_count", stage="publish") == 1
    stop_all(dispatcher, worker)
    assert_each_published_once(folders, names)
    assert worker.find("serving metrics") and not dispatcher.find("serving metrics")


# The pipelined worker: generation slow (like a GPU), the vertical 1080x1920 encode slow too.
VERTICAL = "num_frames: 4\npostprocess: [vertical-1080x1920]\nbackend_options: {delay_s: 0.3}\n"
VERTICAL_FRAMES = 15  # 4 frames at 8 fps, made 30 fps by the preset


def assert_each_vertical_clip_published_once(folders: Folders, names: list[str]) -> None:
    assert markers(folders) == sorted(f"{name}.json" for name in names)
    assert len({folders.metadata(name)["job_id"] for name in names}) == len(names)
    for name in names:
        assert decode(folders.outbox / f"{name}.mp4").frames == VERTICAL_FRAMES
    assert [p.name for p in folders.outbox.iterdir() if p.name.startswith(".")] == []
    assert folders.files("failed") == [] and folders.files("inbox") == []
    assert job_folders(folders) == []


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def test_the_worker_generates_the_next_job_while_one_is_encoded(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    names = drop(folders, 4, VERTICAL)
    dispatcher = start("run", config(folders, redis_server, "disp", **SLOW))
    worker = start("worker", config(folders, redis_server, "w1", **SLOW))
    wait_for(lambda: len(markers(folders)) == len(names), timeout=120, what="every job published")
    stop_all(dispatcher, worker)
    assert_each_vertical_clip_published_once(folders, names)
    events = worker.events()

    def first(event: str, job: str) -> dict[str, Any]:
        return next(e for e in events if e["event"] == event and e.get("job") == job)

    order = [e["job"] for e in events if e["event"] == "took job from the queue"]
    assert sorted(order) == names
    overlaps = sum(at(first("progress", second)) < at(first("encoded", previous))
                   for previous, second in itertools.pairwise(order))
    assert overlaps >= 2, "the GPU waited for ffmpeg"
    # timings_s count work only: never more than the time between the job's own events (a job taken
    # while the stages are full would count its wait, and its generation would start late).
    for name in names:
        timings = folders.metadata(name)["timings_s"]
        taken, generated, encoded = (at(first(e, name)) for e in ("took job from the queue", "generated",
                                                                  "encoded"))
        assert timings["load"] + timings["generate"] <= generated - taken + 0.05, (name, timings)
        assert timings["postprocess"] <= encoded - generated + 0.05, (name, timings)


def encoding_job(worker: Process, folders: Folders) -> str | None:
    """The job the worker is encoding now (an ffmpeg child runs, the job's frames are generated)."""
    children = [stat for stat in Path("/proc").glob("[0-9]*/stat")
                if _is_ffmpeg_of(stat, worker.process.pid)]
    if not children:
        return None
    for state in (folders.work / "w1").glob("*/job.json"):
        with contextlib.suppress(OSError, ValueError):
            job = json.loads(state.read_text())
            if job.get("stage") == "generated" and job.get("encode_dir"):
                return state.parent.name
    return None


def _is_ffmpeg_of(stat: Path, parent: int) -> bool:
    """/proc/<pid>/stat: `pid (comm) state ppid ...`; comm is the binary's name, cut at 15 characters
    (imageio-ffmpeg's binary is ffmpeg-linux-x86_64-…)."""
    with contextlib.suppress(OSError, ValueError):
        text = stat.read_text()
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        return int(rest[1]) == parent and name.startswith("ffmpeg")
    return False


def test_a_worker_killed_during_an_encode_resumes_it_and_publishes_once(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    """The task of a job past generation is acknowledged: the job is kept by the worker's folder, and the
    restarted worker resumes its encode (as `run` does); nothing is published twice."""
    names = drop(folders, 3, VERTICAL)
    settings = {**SLOW, "lease_timeout_s": 20.0, "visibility_timeout_s": 30.0}  # no takeover meanwhile
    dispatcher = start("run", config(folders, redis_server, "disp", **settings))
    doomed = start("worker", config(folders, redis_server, "w1", **settings))
    found: list[str] = []

    def encoding() -> bool:
        assert doomed.process.poll() is None, doomed.log
        job = encoding_job(doomed, folders)
        if job is not None:
            found.append(job)
            doomed.process.kill()  # SIGKILL, with ffmpeg running
        return job is not None

    wait_for(encoding, timeout=120, what="the worker encoding a job")
    doomed.wait()
    (job_id,) = found
    assert (folders.work / "w1" / job_id).is_dir()
    restarted = start("worker", config(folders, redis_server, "w1", **settings))
    wait_for(lambda: len(markers(folders)) == len(names), timeout=120, what="every job published")
    stop_all(dispatcher, restarted)
    assert_each_vertical_clip_published_once(folders, names)
    resumed = restarted.find("resuming job", job_id=job_id)
    assert [e["stage"] for e in resumed] == ["generated"], restarted.log
    assert not [e for p in (dispatcher, restarted) for e in p.find("took over a job")]


def test_a_task_waiting_for_the_stages_goes_back_to_the_queue_at_a_stop(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    """Generation fast, the encode slow: the third task waits while both stages are full, its job left
    in work/queue/. A stop puts that task back on the queue; the two running jobs finish; the next
    worker publishes the third. Every job once."""
    names = drop(folders, 3, VERTICAL.replace("delay_s: 0.3", "delay_s: 0.02"))
    settings = {**SLOW, "stop_timeout_s": 60.0}
    dispatcher = start("run", config(folders, redis_server, "disp", **settings))
    worker = start("worker", config(folders, redis_server, "w1", **settings))
    waiting = worker.read_until("the stages are full: the task waits for a free slot, its job in the queue",
                                timeout=120)
    assert (folders.work / "queue" / waiting["job_id"]).is_dir()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, worker.log
    assert worker.find("stopping: the task goes back to the queue", job_id=waiting["job_id"])
    assert len(worker.find("published")) == 2 and not worker.find("published", job_id=waiting["job_id"])
    assert [p.name for p in (folders.work / "queue").iterdir() if p.is_dir()] == [waiting["job_id"]]
    again = start("worker", config(folders, redis_server, "w1", **settings))
    again.read_until("published", job_id=waiting["job_id"], timeout=120)
    stop_all(dispatcher, again)
    assert_each_vertical_clip_published_once(folders, names)
    assert not dispatcher.find("queued jobs sent again")  # the task itself came back, not a new one


def test_each_backend_has_its_queue_and_only_workers_that_loaded_it_consume_it(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    plugins = {"plugins": ["slow_backend"]}
    previewer = start("worker", config(folders, redis_server, "w1", backend="preview", **plugins))
    slowpoke = start("worker", config(folders, redis_server, "w2", backend="slow", **plugins))
    assert slowpoke.read_until("consuming")["queues"] == ["i2v-watcher", "i2v-watcher.slow"]
    previewer.read_until("consuming")
    names = ["preview", "slow"]  # each job named after the backend its sidecar names
    for name in names:
        make_image(folders.inbox / f"{name}.png", (64, 48))
        (folders.inbox / f"{name}.yaml").write_text(f"backend: {name}\nnum_frames: 3\n")
    dispatcher = start("run", config(folders, redis_server, "disp", **plugins))
    wait_for(lambda: len(markers(folders)) == len(names), timeout=60, what="every job published")
    stop_all(dispatcher, previewer, slowpoke)
    assert_each_published_once(folders, names)
    assert sorted(e["queue"] for e in dispatcher.find("enqueued")) == ["i2v-watcher.preview",
                                                                       "i2v-watcher.slow"]
    for name in names:
        meta = folders.metadata(name)
        assert meta["worker_id"] == ("w2" if meta["backend"] == "slow" else "w1"), name


def test_cancel_makes_a_queued_jobs_task_a_no_op_and_stops_a_running_one(
        folders: Folders, redis_server: RedisServer, start: Start) -> None:
    """job00 is cancelled while its task waits in the broker: the command fails it at once, and the task
    does nothing. job01 carries a cancel marker into the worker (a cancel killed before it could take
    the folder): failed, never generated. job02 is cancelled while it generates; job03 is published."""
    names = drop(folders, 4, "num_frames: 4\nbackend_options: {delay_s: 0.1}\n")
    (folders.inbox / "job02.yaml").write_text("num_frames: 8\nbackend_options: {delay_s: 1.0}\n")
    fast = {**SLOW, "progress_log_s": 0.0}
    shared = config(folders, redis_server, "disp", **fast)
    dispatcher = start("run", shared)
    wait_for(lambda: len(dispatcher.find("enqueued")) == len(names), timeout=30, what="every job enqueued")
    ids = queued_ids(folders)
    done = cli("cancel", "job00", "--config", str(shared))
    assert done.returncode == 0 and "job00: cancelled by" in done.stdout and "was queued" in done.stdout, (
        done.stdout + done.stderr)
    assert sorted(queued_ids(folders)) == names[1:]
    cancel_marker(folders.work / "queue" / ids["job01"], "the test")

    worker = start("worker", config(folders, redis_server, "w1", **fast))
    worker.read_until("progress", job_id=ids["job02"])
    done = cli("cancel", "job02", "--config", str(shared))
    assert done.returncode == 0 and "job02: cancelled (was running" in done.stdout, done.stdout + done.stderr
    wait_for(lambda: markers(folders) == ["job03.json"], timeout=60, what="job03 published")
    stop_all(dispatcher, worker)

    def logged(job: str) -> list[dict[str, Any]]:
        return [e for e in worker.events() if e.get("job_id") == ids[job]]

    (noop,) = logged("job00")  # the task's only line: no folder taken or made, nothing published
    assert noop["event"] == "task of a cancelled job: nothing to do", worker.log
    assert noop["cancel"].startswith("cancelled by")
    assert [e["event"] for e in logged("job01")] == [
        "took job from the queue", "task of a cancelled job: failed without running it", "failed"]
    for name in names[:3]:
        report = json.loads((folders.failed / f"{name}.error.json").read_text())
        assert report["stage"] == "cancelled" and report["job_id"] == ids[name], report
        assert (folders.failed / f"{name}.png").is_file() and (folders.failed / f"{name}.yaml").is_file()
    assert "by the test" in json.loads((folders.failed / "job01.error.json").read_text())["message"]
    assert not worker.find("published", job_id=ids["job02"]) and folders.files("inbox") == []
    assert job_folders(folders) == [] and sorted(p.name for p in folders.work.iterdir()) == [
        ".events", "queue", "w1"]  # no folder left by the command
