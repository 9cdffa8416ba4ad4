"""Shared helpers: temporary folder sets, config files, images, and the daemon as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from PIL import Image

from i2v_watcher.catalog import events
from i2v_watcher.config.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the tests build their models
REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"

FAST = {
    "settle_s": 0.2,
    "sidecar_grace_s": 0.4,
    "orphan_sidecar_s": 1.0,
    "rescan_s": 2.0,
    "retry_backoff_s": 0.05,
    "retry_backoff_max_s": 0.1,
    "log_format": "json",
    "worker_id": "testhost",
}
SMALL = {"num_frames": 6, "resolution": "64p", "fps": 8.0}


# Fixtures that start real processes (daemons, web servers, redis, Chromium): their tests are `slow`, so
# `pytest -m "not slow"` is the fast loop while working. The test command runs them all.
REAL_PROCESS_FIXTURES = {"daemons", "start", "web", "redis_server", "processes", "browser", "site"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    faults = Path(__file__).parent / "faults"
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & REAL_PROCESS_FIXTURES or faults in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_toml(path: Path, settings: dict[str, Any]) -> None:
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for table, values in settings.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


def make_image(path: Path, size: tuple[int, int] = (96, 72), seed: int = 0, fmt: str | None = None,
               **save: Any) -> Path:
    """A smooth, textured image (gradients and a few shapes), like a photo rather than noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    channels = [127 + 120 * np.sin(x / (7 + 3 * i) + y / (11 + 2 * i) + phase[i]) for i in range(3)]
    pixels = np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, **save)
    return path


LEASE_FILES = ("heartbeat.json", ".lock")


def is_lease_file(base: Path, path: Path) -> bool:
    """work/<worker_id>/heartbeat.json and .lock: each daemon's lease, and work/.events/*.jsonl: the
    event logs (catalog.events); not a job's file."""
    if base.name != "work" or path.parent.parent != base:
        return False
    return path.name in LEASE_FILES or (path.parent.name == ".events" and path.suffix == ".jsonl")


@dataclass
class Folders:
    root: Path
    config: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Path:
        if name in ("inbox", "outbox", "failed", "done", "work"):
            return self.root / name
        raise AttributeError(name)

    def write_config(self, **changes: Any) -> Path:
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(self.settings.get(key), dict):
                self.settings[key] = {**self.settings[key], **value}
            else:
                self.settings[key] = value
        write_toml(self.config, self.settings)
        return self.config

    def files(self, folder: str) -> list[str]:
        """The files in a folder; in work/, a worker's lease (heartbeat, lock) is not a job's file."""
        base = self.root / folder
        return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                      if (p.is_file() or p.is_symlink()) and not is_lease_file(base, p))

    def jobs_in_work(self) -> list[Path]:
        return sorted(p for p in (self.work / "testhost").glob("*") if (p / "job.json").exists())

    def metadata(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.outbox / f"{name}.json").read_text())
        return data

    def report(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.failed / f"{name}.error.json").read_text())
        return data


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's catalog index (catalog.index.default_path) in a cache folder of its own, for the
    commands it runs in-process and the processes it starts: never the user's ~/.cache."""
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults: a command run in-process configures logging (its
    level filters what `structlog.testing.capture_logs` sees), and with several test processes the
    order of the files, so what ran before, differs from run to run."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    root = tmp_path / "data"
    (root / "inbox").mkdir(parents=True)
    f = Folders(root=root, config=tmp_path / "i2v.toml")
    f.write_config(
        inbox=str(root / "inbox"), outbox=str(root / "outbox"), failed=str(root / "failed"),
        done=str(root / "done"), work=str(root / "work"), scratch=str(tmp_path / "scratch"), **FAST,
        defaults=dict(SMALL),
    )
    return f


def announce(outbox: Path, rel: str, kind: str = "published") -> None:
    """The event line a daemon appends when it publishes (catalog.events), for a test that writes a
    clip's metadata into `outbox` by hand while a dashboard runs (its work folder: beside the outbox);
    nothing where that folder does not exist yet (the dashboard's first walk finds the clip)."""
    work = outbox.parent / "work"
    if work.is_dir():
        root = outbox.parent
        settings = Settings(inbox=root / "inbox", outbox=outbox, failed=root / "failed", done=root / "done",
                            work=work, worker_id="hand")
        assert events.append(settings, kind, path=rel)  # type: ignore[arg-type]


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(REPO), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "i2v_watcher", *args], capture_output=True, text=True,
                            timeout=timeout, env=env or daemon_env(), cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


class Daemon:
    """`i2v-watcher run` as a real subprocess; its JSON log lines are kept for assertions."""

    def __init__(self, config: Path, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "i2v_watcher", "run", "--config", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=daemon_env(**env), cwd=REPO)
        self.lines: list[str] = []

    def wait(self, timeout: float = 60) -> int:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
            self.lines += out.splitlines()
            raise AssertionError("daemon did not exit in time:\n" + self.log) from None
        self.lines += out.splitlines()
        return self.process.returncode

    def read_until(self, event: str) -> dict[str, Any]:
        """Read the log as it is written until a line with this event (pytest-timeout bounds it)."""
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, ""):
            self.lines.append(line.rstrip("\n"))
            try:
                data: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if data.get("event") == event:
                return data
        raise AssertionError(f"the daemon exited before logging {event!r}:\n{self.log}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.kill()
        self.wait()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.communicate()


@pytest.fixture
def start(daemons: list[Daemon]) -> Callable[..., Daemon]:
    def _start(config: Path, *args: str, **env: str) -> Daemon:
        daemon = Daemon(config, *args, **env)
        daemons.append(daemon)
        return daemon
    return _start


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Video:
    frames: int
    width: int
    height: int
    fps: float
    codec: str
    pix_fmt: str
    pixels: np.ndarray


def decode(path: Path) -> Video:
    """Decode an MP4 with the ffmpeg that imageio-ffmpeg ships (no ffprobe needed)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(h, w, 3) for chunk in reader]
    return Video(frames=len(frames), width=w, height=h, fps=float(meta["fps"]),
                 codec=str(meta.get("codec", "")), pix_fmt=str(meta.get("pix_fmt", "")),
                 pixels=np.stack(frames) if frames else np.empty((0, h, w, 3), np.uint8))


class IdleSockets:
    """Connections that send nothing (a slow or hostile client), as many as asked; those the server
    refuses are counted."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        self.refused = 0
        for _ in range(count):
            try:
                self.sockets.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                self.refused += 1

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
