"""For the Celery-mode tests: a real redis-server on a free local port (never a mock), the shared config
in celery mode, and what every case checks at its end (each input published exactly once). The
`run` and `worker` processes, whose JSON log a thread reads as it is written: conftest.py."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, Folders, decode, wait_for, write_toml

INSTALL_HINT = ("redis-server is not installed. The Celery tests run against a real Redis server: run "
                "`bash tests/setup.sh` (the test command's first half), which installs Debian's "
                "redis-server package (or `apt-get install -y redis-server`)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """`redis-server` as a child process, without persistence: a restart loses every key, as a Redis
    without `appendonly` or snapshots does when it dies."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT)
        self.binary = binary
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 (the child keeps it open)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self.ping, timeout=10, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited: {(self.folder / 'redis.log').read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False

    def kill(self) -> None:
        """SIGKILL: whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


def config(folders: Folders, redis_server: RedisServer, name: str, **changes: Any) -> Path:
    """The shared config in celery mode, with this process's worker_id."""
    settings = {**folders.settings, "coordination": "celery", "broker_url": redis_server.url,
                "worker_id": name, "lease_timeout_s": 3.0, "visibility_timeout_s": 60.0, **changes}
    path = folders.config.with_name(f"{name}.toml")
    write_toml(path, settings)
    return path


def markers(folders: Folders) -> list[str]:
    return sorted(p.name for p in folders.outbox.glob("*.json"))


def job_folders(folders: Folders) -> list[str]:
    """Job folders anywhere under work/ (heartbeats and locks are not jobs)."""
    return sorted(str(p.relative_to(folders.work)) for p in folders.work.glob("*/*") if p.is_dir())


def assert_each_published_once(folders: Folders, names: list[str],
                               frames: dict[str, int] | None = None) -> None:
    """`frames`: the clips whose frame count is not their job's num_frames (a preset changed the rate)."""
    assert markers(folders) == sorted(f"{name}.json" for name in names)
    ids = set()
    for name in names:
        meta = folders.metadata(name)
        ids.add(meta["job_id"])
        expected = (frames or {}).get(name, meta["parameters"]["num_frames"])
        assert decode(folders.outbox / f"{name}.mp4").frames == expected
    assert len(ids) == len(names)
    visible = sorted(p.name for p in folders.outbox.iterdir() if not p.name.startswith("."))
    assert visible == sorted(f"{n}{ext}" for n in names for ext in (".mp4", ".jpg", ".json"))
    assert [p.name for p in folders.outbox.iterdir() if p.name.startswith(".")] == []
    assert folders.files("failed") == [] and folders.files("inbox") == []
    assert job_folders(folders) == []


def stop_all(*processes: Daemon) -> None:
    for process in processes:
        process.signal(signal.SIGTERM)
    for process in processes:
        assert process.wait() == 0, process.log


def queued_ids(folders: Folders) -> dict[str, str]:
    """Name → job id of the jobs waiting in work/queue/."""
    return {json.loads((p / "job.json").read_text())["key"]: p.name
            for p in (folders.work / "queue").iterdir() if p.is_dir()}
