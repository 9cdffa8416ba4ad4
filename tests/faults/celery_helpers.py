"""For the Celery-mode tests: a real redis-server on a free local port (never a mock), and `run` and
`worker` processes whose JSON log a thread reads as it is written."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, daemon_env, wait_for

INSTALL_HINT = ("redis-server is not installed. The Celery tests run against a real Redis server: run "
                "the test command `bash tests/run.sh`, which installs Debian's redis-server package "
                "(or `apt-get install -y redis-server`)")


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


class Process:
    """`i2v-watcher <command> --config FILE` as a real subprocess."""

    def __init__(self, command: str, config: Path, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "i2v_watcher", command, "--config", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=daemon_env(**env), cwd=REPO)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, ""):
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    found.append(data)
        return found

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events()
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items())]

    def read_until(self, event: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(event, **match)
            if found:
                return found[0]
            if self.process.poll() is not None:
                self._reader.join(5)
                if self.find(event, **match):
                    continue
                code = self.process.returncode
                raise AssertionError(f"exited ({code}) before logging {event!r}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} {match or ''} within {timeout} s:\n{self.log}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"did not exit within {timeout} s:\n{self.log}") from None
        self._reader.join(5)
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(5)
