"""Issue 18's hostile load, all at once, against the daemon (`run`) and a Celery `worker` (with the `run`
that feeds it): each survives it, and every legitimate job dropped beside the hostile ones is published
exactly once. The dashboard's share is tests/web/test_hostile_load.py.

Bounded in count and time: one tree 1,200 levels deep, one path past PATH_MAX, a handful of bad jobs,
300 idle sockets against a process capped at 256 descriptors."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_metrics import scrape

from conftest import Folders, IdleSockets, make_image, wait_for, write_toml

from .celery_helpers import RedisServer, free_port
from .conftest import LiveDaemon

LEGIT = ("legit0", "legit1-old", "legit2-future", "team/legit3")
DEEP_LEVELS = 1_200
LONG_NAME, LONG_LEVELS = "n" * 250, 17  # 17 folders of 251 characters: past PATH_MAX (4,096)
OLD, FUTURE = time.time() - 11 * 365 * 86400, time.time() + 365 * 86400
NOFILE = 256  # the daemon's descriptor limit in these tests: fewer than the idle sockets opened
IDLE_SOCKETS = 300


def nest(top: Path, name: str, levels: int) -> None:
    """top, then `levels` nested folders named `name`, an image at the bottom: made through descriptors,
    as no path to the bottom may be short enough to name."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        image = os.open("bottom.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        with os.fdopen(image, "wb") as handle:
            Image.new("RGB", (96, 72), "gray").save(handle, "PNG")
    finally:
        os.close(fd)


def unnest(top: Path) -> None:
    """Remove a tree too deep for shutil.rmtree (it recurses): lift each level up, one at a time."""
    lifted = top.with_name(top.name + ".lift")
    while top.exists():
        for entry in os.scandir(top):
            if entry.is_dir(follow_symlinks=False):
                os.rename(entry.path, lifted)
            else:
                os.unlink(entry.path)
        os.rmdir(top)
        if lifted.exists():
            os.rename(lifted, top)


@pytest.fixture
def hostile(folders: Folders, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Drops the hostile inbox load; removes the trees pytest could not."""
    yield lambda: drop_hostile(folders, tmp_path / "outside")
    for top in ("deep", "long"):
        for root in (folders.inbox, folders.failed, folders.done):
            if (root / top).exists():
                unnest(root / top)


def drop_legit(folders: Folders) -> None:
    for index, name in enumerate(LEGIT):
        image = make_image(folders.inbox / f"{name}.png", seed=index)
        sidecar = image.with_suffix(".yaml")
        sidecar.write_text("num_frames: 4\n")
        stamp = OLD if name.endswith("-old") else FUTURE if name.endswith("-future") else None
        if stamp is not None:  # `cp -p` of a file from 2015; a camera whose clock is a year ahead
            for path in (image, sidecar):
                os.utime(path, (stamp, stamp))


def drop_hostile(folders: Folders, outside: Path) -> None:
    inbox = folders.inbox
    nest(inbox / "deep", "d", DEEP_LEVELS)
    nest(inbox / "long", LONG_NAME, LONG_LEVELS)
    # Work that would explode after the checks: 2 frames at 0.01 fps made 30 fps at 1080x1920.
    make_image(inbox / "costly.png")
    (inbox / "costly.yaml").write_text("num_frames: 2\nfps: 0.01\npostprocess: [vertical-1080x1920]\n")
    # A private file of the service user, hard-linked into the inbox.
    outside.mkdir()
    private = make_image(outside / "private.png", seed=7)
    private.chmod(0o600)
    os.link(private, inbox / "linked.png")
    # Problem files whose names later jobs' folders will want in failed/.
    (inbox / "projX").write_bytes(b"no suffix, no job")
    (inbox / "projY").symlink_to(outside / "private.png")


def drop_colliding_jobs(folders: Folders) -> None:
    """Jobs from folders named like the problem files that went to failed/ before them; each fails."""
    for folder in ("projX", "projY"):
        make_image(folders.inbox / folder / "bad.png")
        (folders.inbox / folder / "bad.yaml").write_text("num_frame: 4\n")  # a typo: the job fails


def published(folders: Folders) -> dict[str, list[dict[str, Any]]]:
    """Each published input (its path in the inbox, without suffix) with every metadata that names it."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in folders.outbox.rglob("*.json"):
        if any(part.startswith(".") for part in path.relative_to(folders.outbox).parts):
            continue
        meta = json.loads(path.read_text())
        found.setdefault(meta["input"]["path"].rpartition(".")[0], []).append(meta)
    return found


def reports(folders: Folders) -> list[str]:
    return sorted(str(p.relative_to(folders.failed)) for p in folders.failed.rglob("*.error.json"))


def job_folders(folders: Folders) -> list[str]:
    return sorted(str(p.relative_to(folders.work)) for p in folders.work.glob("*/*") if p.is_dir())


def reported(folders: Folders, name: str) -> bool:
    """A report for this job in failed/: its own folder there, or the detour `<folder>-N/` taken when a
    user's file holds that folder's name."""
    folder, _, stem = name.rpartition("/")
    pattern = re.escape(folder) + r"(-\d+)?/" if folder else ""
    return any(re.fullmatch(pattern + re.escape(stem) + r"\.error\.json", r) for r in reports(folders))


def settled(folders: Folders, names: tuple[str, ...]) -> bool:
    """Every named job published or reported, and nothing left in work/."""
    done = set(published(folders))
    return all(n in done or reported(folders, n) for n in names) and not job_folders(folders)


def assert_survived(folders: Folders) -> None:
    found = published(folders)
    for name in LEGIT:
        assert len(found.get(name, [])) == 1, (name, sorted(found), reports(folders))
    ids = [meta["job_id"] for metas in found.values() for meta in metas]
    assert len(set(ids)) == len(ids)
    for bad in ("costly", "projX/bad", "projY/bad"):
        assert bad not in found, bad
        assert reported(folders, bad), (bad, reports(folders))
    if "linked" in found:  # accepted (the service user owns it): never published wider than the input
        for path in folders.outbox.glob("linked*"):
            assert not path.stat().st_mode & (stat.S_IROTH | stat.S_IRGRP), (path, oct(path.stat().st_mode))
    assert not job_folders(folders)


def cap_descriptors(pid: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def metrics_answer(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        scrape(port)
        return True
    return False


def hostile_run(folders: Folders, service: LiveDaemon, port: int) -> None:
    """The load against a running service whose metrics are on `port`: idle sockets held while the
    hostile files and the legitimate jobs arrive, then the jobs whose folders collide in failed/."""
    wait_for(lambda: metrics_answer(port), timeout=60, what="the metrics endpoint")
    cap_descriptors(service.process.pid)
    idle = IdleSockets(port, IDLE_SOCKETS)
    try:
        drop_legit(folders)
        wait_for(lambda: settled(folders, LEGIT), timeout=120, what="the legitimate jobs, idle sockets held")
        wait_for(lambda: metrics_answer(port), timeout=60, what="a scrape while idle sockets are held")
    finally:
        idle.close()
    wait_for(lambda: settled(folders, ("costly", "linked")), timeout=60, what="the hostile jobs settled")
    wait_for(lambda: not (folders.inbox / "projX").is_file() and not (folders.inbox / "projY").is_symlink(),
             timeout=30, what="the problem files moved out of the inbox")
    drop_colliding_jobs(folders)
    wait_for(lambda: settled(folders, ("projX/bad", "projY/bad")), timeout=60,
             what="the jobs whose folders collide with problem files in failed/")
    assert service.process.poll() is None, service.log


def test_the_daemon_survives_the_hostile_load(folders: Folders, spawn: Any,
                                              hostile: Callable[[], None]) -> None:
    port = free_port()
    config = folders.write_config(metrics_port=port)
    hostile()
    daemon = spawn(config)
    hostile_run(folders, daemon, port)
    assert_survived(folders)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    restarted = spawn(config)  # the trees still in the inbox do not stop the next start either
    restarted.read_until("watching")
    restarted.signal(signal.SIGTERM)
    assert restarted.wait() == 0, restarted.log


def test_a_celery_worker_survives_the_hostile_load(folders: Folders, spawn: Any, spawned: list[LiveDaemon],
                                                   tmp_path: Path, hostile: Callable[[], None]) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        port = free_port()
        shared = {**folders.settings, "coordination": "celery", "broker_url": redis.url,
                  "lease_timeout_s": 3.0, "visibility_timeout_s": 60.0}
        configs = {}
        for name, extra in (("disp", {}), ("w1", {"metrics_port": port})):
            configs[name] = folders.config.with_name(f"{name}.toml")
            write_toml(configs[name], {**shared, "worker_id": name, **extra})
        hostile()
        dispatcher = spawn(configs["disp"])
        worker = LiveDaemon(configs["w1"], command="worker")
        spawned.append(worker)
        hostile_run(folders, worker, port)
        assert dispatcher.process.poll() is None, dispatcher.log
        assert_survived(folders)
        for process in (dispatcher, worker):
            process.signal(signal.SIGTERM)
        for process in (dispatcher, worker):
            assert process.wait() == 0, process.log
    finally:
        redis.kill()
