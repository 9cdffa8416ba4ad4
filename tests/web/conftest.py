"""`i2v-watcher web` as a real server process, on a free local port, over the test's folders."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Folders, daemon_env

TOKEN = "test-token-0123456789abcdef"
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebServer:
    def __init__(self, config: Path, **env: str) -> None:
        self.port = int(env.pop("port", "0")) or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "i2v_watcher", "web", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env=daemon_env(I2V_WEB_LISTEN=f"127.0.0.1:{self.port}", **env))

    def wait_ready(self, timeout: float = 30) -> WebServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"web exited {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the web server did not answer in time")

    def output(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()


@pytest.fixture
def web(folders: Folders) -> Iterator[Callable[..., WebServer]]:
    """Start `i2v-watcher web` over the test's folders; settings as keyword arguments (written into
    the config), environment variables as `env=`."""
    started: list[WebServer] = []

    def _start(env: dict[str, str] | None = None, **settings: Any) -> WebServer:
        for name in ("outbox", "failed", "done", "work"):
            (folders.root / name).mkdir(exist_ok=True)
        config = folders.write_config(**settings)
        server = WebServer(config, **(env or {}))
        started.append(server)
        return server.wait_ready()

    yield _start
    for server in started:
        server.stop()


def writable(**extra: Any) -> dict[str, Any]:
    """Settings of a dashboard that may submit and retry, with the test token."""
    return {"web_allow_submit": True, "web_allow_retry": True, "web_token": TOKEN, **extra}
