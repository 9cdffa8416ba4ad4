"""Fixtures for the fault tests: daemons whose log is read live (and that can be frozen the instant they
log an event), small tmpfs mounts, and data trees served by a daemon that is not root.

CI runs as root, which ignores file modes: the permission cases run the daemon as `nobody` through
`setpriv`, on a tree under /tmp that nobody can enter (pytest's own tmp_path is mode 700)."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST, REPO, SMALL, Daemon, Folders, daemon_env, is_lease_file, make_image, wait_for

from .celery_helpers import RedisServer


def entries(root: Path) -> dict[str, str]:
    """Every entry below root that is not a folder (hidden ones included), with what it is (lstat only:
    a FIFO or a link is never opened). Unlike Folders.files, FIFOs and sockets are listed too."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            if not is_lease_file(root, path):
                with contextlib.suppress(FileNotFoundError):  # removed while we looked (a job's trash)
                    found[str(path.relative_to(root))] = kind(path)
    return found


def kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    for test, what in ((stat.S_ISLNK, "link"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISREG, "file"), (stat.S_ISDIR, "dir")):
        if test(mode):
            return what
    return "other"


def visible(root: Path) -> list[str]:
    """What a consumer of the folder sees: no component of the path starts with a dot."""
    return sorted(p for p in entries(root) if not any(part.startswith(".") for part in Path(p).parts))


def hidden(root: Path) -> list[str]:
    return sorted(set(entries(root)) - set(visible(root)))


@dataclass(frozen=True)
class RunAs:
    """The user a daemon runs as. As root: `nobody` through setpriv. As anyone else: that user (file
    modes already bind it, and it cannot switch users)."""

    uid: int
    gid: int

    @property
    def prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]

    def give(self, path: Path) -> None:
        """Hand a tree to this user (what the test wrote there as root included)."""
        if os.geteuid() != 0:
            return
        os.lchown(path, self.uid, self.gid)
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(folder, name), self.uid, self.gid)


class LiveDaemon(Daemon):
    """`i2v-watcher run` (or `worker`) as a real subprocess, optionally as another user. A thread reads
    its JSON log as it is written, so a test can wait for an event, count events while the daemon
    runs, or have the daemon frozen (SIGSTOP) the instant it logs an event, before it can do anything
    else."""

    def __init__(self, config: Path, *args: str, user: RunAs | None = None, command: str = "run",
                 **env: str) -> None:
        command_line = [sys.executable, "-m", "i2v_watcher", command, "--config", str(config), *args]
        self.process = subprocess.Popen(
            (user.prefix if user else []) + command_line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=daemon_env(**env), cwd=REPO)
        self.lines: list[str] = []
        self._freeze: tuple[Callable[[dict[str, Any]], bool], threading.Event] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, ""):
            line = line.rstrip("\n")
            trigger = self._freeze
            if trigger is not None:
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and trigger[0](data):
                        self._freeze = None
                        os.kill(self.process.pid, signal.SIGSTOP)
                        trigger[1].set()
            self.lines.append(line)

    def freeze_on(self, event: str, **match: Any) -> threading.Event:
        """SIGSTOP the daemon as soon as it logs this event (with these fields); the returned flag is
        set once it is frozen. Call it right after the start, before the event can have been logged."""
        assert not self.find(event, **match), "too late: the event was logged already"
        frozen = threading.Event()
        self._freeze = (lambda data: _matches(data, event, match), frozen)
        return frozen

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def wait(self, timeout: float = 60) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._reader.join(10)
            raise AssertionError(f"the daemon did not exit within {timeout} s:\n{self.log}") from None
        self._reader.join(10)
        return self.process.returncode

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events() if _matches(e, event, match)]

    def read_until(self, event: str, timeout: float = 60, **match: Any) -> dict[str, Any]:
        def logged() -> dict[str, Any] | None:
            found = self.find(event, **match)
            if found:
                return found[0]
            if self.process.poll() is not None:
                self._reader.join(10)
                if not self.find(event, **match):
                    raise AssertionError(f"the daemon exited before logging {event!r}:\n{self.log}")
            return None

        try:
            found: dict[str, Any] = wait_for(logged, timeout, what=f"the event {event!r} {match or ''}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log}") from None
        return found

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    found.append(data)
        return found

    def stop(self) -> None:
        """For teardown: whatever state it is in (frozen included), it is gone afterwards."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(10)


def _matches(data: dict[str, Any], event: str, match: dict[str, Any]) -> bool:
    return data.get("event") == event and all(data.get(k) == v for k, v in match.items())


Spawn = Callable[..., LiveDaemon]


@pytest.fixture
def spawned() -> Iterator[list[LiveDaemon]]:
    started: list[LiveDaemon] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture
def spawn(spawned: list[LiveDaemon]) -> Spawn:
    def _spawn(config: Path, *args: str, user: RunAs | None = None, **env: str) -> LiveDaemon:
        if user is not None:  # nobody has no home; byte code cannot be written into the repository
            env = {"HOME": str(config.parent), "PYTHONDONTWRITEBYTECODE": "1", **env}
        daemon = LiveDaemon(config, *args, user=user, **env)
        spawned.append(daemon)
        return daemon
    return _spawn


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def processes(redis_server: RedisServer) -> Iterator[list[LiveDaemon]]:
    """Killed at teardown, before the Redis server they use."""
    started: list[LiveDaemon] = []
    yield started
    for process in started:
        process.stop()
        # Shown by pytest when the test failed.
        print(f"---- {process.process.args[3]} (exit {process.process.returncode}) ----\n{process.log}")


@dataclass
class Tmpfs:
    path: Path

    def resize(self, size: str) -> None:
        run = subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], capture_output=True,
                             text=True)
        assert run.returncode == 0, f"remount of {self.path} failed: {run.stderr}"

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@pytest.fixture
def tmpfs(spawned: list[LiveDaemon]) -> Iterator[Callable[[Path, str], Tmpfs]]:
    """mount(path, size): a tmpfs of that size on path (created if missing). Unmounted at teardown,
    always, after the daemons that may hold files there are killed (lazily, if it stays busy)."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Tmpfs:
        if os.geteuid() != 0:
            pytest.skip(f"mounting a tmpfs needs root (CI runs as root); this process runs as uid "
                        f"{os.geteuid()}")
        path.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            if "permission denied" in run.stderr.lower() or "superuser" in run.stderr.lower():
                pytest.skip(f"root here may not mount a tmpfs (no CAP_SYS_ADMIN?): {run.stderr.strip()}")
            raise AssertionError(f"mount -t tmpfs on {path} failed: {run.stderr}")
        mounted.append(path)
        return Tmpfs(path)

    yield mount
    for daemon in spawned:
        daemon.stop()
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="session")
def nobody() -> RunAs:
    """The unprivileged user the permission cases run the daemon as; skipped, with the reason, where
    that user cannot run the daemon from this checkout."""
    if os.geteuid() != 0:
        who = RunAs(os.geteuid(), os.getegid())
    else:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is missing: cannot run the daemon as nobody")
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("there is no user 'nobody' to run the daemon as")
        gid = user.pw_gid
        for group in ("nogroup", "nobody"):
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(group).gr_gid
                break
        who = RunAs(user.pw_uid, gid)
    probe = ("import subprocess, sys, i2v_watcher.service.daemon, imageio_ffmpeg; "
             "subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-version'], check=True, "
             "capture_output=True); print(sys.base_prefix)")
    try:
        run = subprocess.run([*who.prefix, sys.executable, "-c", probe], capture_output=True, text=True,
                             cwd=REPO, env=daemon_env(PYTHONDONTWRITEBYTECODE="1", HOME="/"))
        problem = run.stderr[-500:] if run.returncode != 0 else ""
    except OSError as exc:
        problem = str(exc)
    if problem:
        pytest.skip(f"uid {who.uid} cannot run the daemon from {REPO} with {sys.executable} (the checkout, "
                    f"the virtual environment, its base interpreter and ffmpeg must be readable by others): "
                    f"{problem}")
    if run.stdout.strip() != sys.base_prefix:
        # setpriv keeps root's capabilities up to the exec, so the interpreter starts even where its home
        # is not readable by nobody; it then takes whatever standard library it finds. Said, not hidden.
        warnings.warn(f"the daemon runs as uid {who.uid} with the standard library of "
                      f"{run.stdout.strip()}, not {sys.base_prefix} (not readable by that user)",
                      stacklevel=1)
    return who


@pytest.fixture
def nobody_folders(nobody: RunAs, spawned: list[LiveDaemon]) -> Iterator[Folders]:
    """Like `folders`, but in a tree under /tmp that belongs to nobody; removed at teardown (after the
    daemons are killed, and whatever modes a test left on its folders)."""
    base = Path(tempfile.mkdtemp(prefix="i2v-faults-", dir="/tmp"))
    base.chmod(0o755)
    root = base / "data"
    (root / "inbox").mkdir(parents=True)
    f = Folders(root=root, config=base / "i2v.toml")
    f.write_config(
        inbox=str(root / "inbox"), outbox=str(root / "outbox"), failed=str(root / "failed"),
        done=str(root / "done"), work=str(root / "work"), **FAST, defaults=dict(SMALL),
    )
    f.config.chmod(0o644)
    nobody.give(base)
    yield f
    for daemon in spawned:
        daemon.stop()
    for folder, dirs, _ in os.walk(base):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, name), 0o755, follow_symlinks=False)
    shutil.rmtree(base, ignore_errors=True)


def drop(folders: Folders, count: int, sidecar: str = "num_frames: 4\n") -> list[str]:
    """`count` jobs (job00, job01, …), each an image and this sidecar."""
    names = [f"job{index:02d}" for index in range(count)]
    for index, name in enumerate(names):
        make_image(folders.inbox / f"{name}.png", seed=index)
        (folders.inbox / f"{name}.yaml").write_text(sidecar)
    return names
