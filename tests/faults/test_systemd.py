"""The daemon as systemd sees it, with real sockets: sd_notify datagrams on a NOTIFY_SOCKET the test
binds (READY=1 after start-up and before a resumed job, STATUS= with progress, WATCHDOG=1 only while the
daemon makes progress, STOPPING=1 on SIGTERM, PAUSED and DRAINING under an operator's pause and drain,
with `run --once` waiting out a pause), and journal entries on a journald socket the test binds
in a private mount namespace (one field per key, so `journalctl JOB_ID=…` follows a job)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PLUGINS, REPO, Folders, make_image, wait_for
from faults.conftest import Spawn, visible
from faults.test_control import drop_job
from i2v_watcher.config.settings import load_settings
from i2v_watcher.control.pause import pause, resume
from i2v_watcher.ops.control import pause_and_wait
from i2v_watcher.work.lease import read_heartbeat

SLOW = {"backend": "slow", "plugins": ["slow_backend"]}


class Datagrams:
    """A unix datagram socket bound at `path`, its messages kept with their arrival time."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.received: list[tuple[float, bytes]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            self.received.append((time.monotonic(), data))

    def close(self) -> None:
        self.sock.close()


def notify_fields(data: bytes) -> list[str]:
    return data.decode().split("\n")


def journal_entry(data: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=value lines, or KEY, a 64-bit little-endian length and the value
    for values with a newline."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            at = end + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[Datagrams]:
    sock = Datagrams(tmp_path / "notify.sock")
    yield sock
    sock.close()


@dataclass
class Message:
    at: float
    fields: list[str]

    def has(self, prefix: str) -> bool:
        return any(f.startswith(prefix) for f in self.fields)

    def value(self, key: str) -> str | None:
        return next((f.split("=", 1)[1] for f in self.fields if f.startswith(key + "=")), None)


def messages(sock: Datagrams) -> list[Message]:
    return [Message(at, notify_fields(data)) for at, data in list(sock.received)]


def statuses(sock: Datagrams) -> list[str]:
    return [m.value("STATUS") or "" for m in messages(sock)]


def first(found: list[Message], prefix: str) -> int:
    return next(i for i, m in enumerate(found) if m.has(prefix))


def test_notify_sequence_ready_status_watchdog_only_while_alive_and_stopping(
        folders: Folders, spawn: Spawn, notify_socket: Datagrams) -> None:
    folders.write_config(**SLOW, max_silent_s=1.5)
    # A job left in the work folder by a daemon killed in the middle of it: the next start resumes it.
    make_image(folders.inbox / "resumed.png")
    (folders.inbox / "resumed.yaml").write_text(
        "prompt: resumed\nnum_frames: 6\nbackend_options: {delay_s: 0.4}\n")
    killed = spawn(folders.config)
    killed.read_until("progress", job="resumed")
    killed.process.kill()
    killed.wait()

    daemon = spawn(folders.config, NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="1000000",
                   SLOW_BACKEND_NOTIFY="1")
    daemon.read_until("published", job="resumed", timeout=90)
    # A job that gets stuck: 4 s without a progress point, twice, against max_silent_s = 1.5.
    make_image(folders.inbox / "stuck.png")
    (folders.inbox / "stuck.yaml").write_text("prompt: stuck\nnum_frames: 2\nbackend_options: {delay_s: 4}\n")
    daemon.read_until("published", job="stuck", timeout=90)
    wait_for(lambda: len([m for m in messages(notify_socket) if m.has("WATCHDOG=1")
                          and m.at > time.monotonic() - 1.5]) >= 2, 10, what="watchdog pings again when idle")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, daemon.log

    found = messages(notify_socket)
    order = [first(found, p) for p in ("EXTEND_TIMEOUT_USEC=", "READY=1", "X_GENERATING=resumed",
                                        "X_GENERATING=stuck", "STOPPING=1")]
    assert order == sorted(order), [m.fields for m in found]
    load = next(m for m in found[:order[1]] if "loading the slow backend" in (m.value("STATUS") or ""))
    assert int(load.value("EXTEND_TIMEOUT_USEC") or 0) == 1200 * 10**6  # load_timeout_s, per load
    assert not any(m.has("WATCHDOG=1") for m in found[:order[1]]), "pings before READY"
    statuses = [m.value("STATUS") or "" for m in found if m.has("STATUS=")]
    assert any("job resumed" in s and "generate" in s and "/6" in s for s in statuses), statuses
    assert any("job stuck" in s and "NO PROGRESS" in s for s in statuses), statuses
    assert any("1 published" in s for s in statuses) and any("queue" in s for s in statuses)

    pings = [m.at for m in found if m.has("WATCHDOG=1")]
    stuck_from, stuck_to = found[order[3]].at, found[order[4]].at
    gaps = [(b - a, a) for a, b in itertools.pairwise(pings)]
    while_alive = [g for g, at in gaps if at < stuck_from - 1 or at > stuck_to]
    assert while_alive and max(while_alive) < 1.3, while_alive  # every WatchdogSec/2 = 0.5 s
    assert max(g for g, at in gaps if stuck_from <= at <= stuck_to) > 2.0, gaps  # silent while stuck
    assert len(pings) >= 10
    assert found[-1].has("STOPPING=1") or any(m.has("STOPPING=1") for m in found[order[4]:])


def test_the_watchdog_is_not_ours_when_watchdog_pid_names_another_process(
        folders: Folders, spawn: Spawn, notify_socket: Datagrams) -> None:
    folders.write_config(**SLOW)
    daemon = spawn(folders.config, NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="200000",
                   WATCHDOG_PID="1")
    wait_for(lambda: any(m.has("READY=1") for m in messages(notify_socket)), 60, what="READY=1")
    time.sleep(1.0)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    assert not any(m.has("WATCHDOG=1") for m in messages(notify_socket))


def test_a_start_up_error_is_in_the_status_line(folders: Folders, spawn: Spawn,
                                                notify_socket: Datagrams) -> None:
    folders.write_config(ffmpeg_path=str(folders.root / "no-ffmpeg"))
    daemon = spawn(folders.config, NOTIFY_SOCKET=str(notify_socket.path))
    assert daemon.wait(timeout=60) == 2
    statuses = [m.value("STATUS") or "" for m in messages(notify_socket)]
    assert any(s.startswith("cannot start:") and "no-ffmpeg" in s for s in statuses), statuses
    assert not any(m.has("READY=1") for m in messages(notify_socket))


def test_run_once_waits_while_paused_a_drain_ends_it_and_the_status_line_says_so(
        folders: Folders, spawn: Spawn, notify_socket: Datagrams) -> None:
    """`run --once` under a pause claims nothing, says so once (who, since when, what ends it) and
    waits; resumed, it runs its batch. A drain while it runs a job: the job is published, the batch
    exits 0, what came after stays queued. systemd's STATUS says PAUSED, then DRAINING."""
    folders.write_config(**SLOW, lease_timeout_s=6.0)  # a beat a second: a pause confirmed sooner
    drop_job(folders, "a")
    settings = load_settings(folders.config)  # the controls in-process: the batch is the real process
    pause(settings)  # before any worker ever started: the work folder is made for it
    batch = spawn(folders.config, "--once", NOTIFY_SOCKET=str(notify_socket.path))
    said = batch.read_until("paused by an operator: claiming nothing")
    assert said["level"] == "warning" and said["paused_by"] and said["since"]
    assert said["until"] == "`i2v-watcher resume`"
    wait_for(lambda: read_heartbeat(folders.work / "testhost").get("paused"), 10, what="a paused heartbeat")
    wait_for(lambda: any("PAUSED (claims nothing new" in s for s in statuses(notify_socket)), 10,
             what="PAUSED in the status line")
    time.sleep(0.5)  # with the waits above, more than two loop turns and a settle_s
    assert batch.process.poll() is None and "a.png" in visible(folders.inbox) and not batch.find("claimed")
    resume(settings)
    assert batch.wait(60) == 0
    assert "a.json" in visible(folders.outbox)
    assert len(batch.find("paused by an operator: claiming nothing")) == 1  # said once, not every turn

    drop_job(folders, "b", delay_s=0.5)
    notify_socket.received.clear()
    batch = spawn(folders.config, "--once", NOTIFY_SOCKET=str(notify_socket.path))
    batch.read_until("claimed", job="b")
    assert pause_and_wait(settings, drain=True).confirmed == ["testhost"]
    drop_job(folders, "c")
    assert batch.wait(60) == 0
    assert "b.json" in visible(folders.outbox) and "c.png" in visible(folders.inbox)
    assert [e["job"] for e in batch.find("claimed")] == ["b"]
    assert batch.find("paused by an operator: claiming nothing", draining=True)
    assert any("DRAINING (claims nothing new, exits once its jobs are done)" in s
               for s in statuses(notify_socket)), statuses(notify_socket)


def test_without_systemd_python_the_daemon_runs_and_says_so_once(
        folders: Folders, spawn: Spawn, notify_socket: Datagrams, tmp_path: Path) -> None:
    fake = tmp_path / "site" / "systemd"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'systemd'\", name='systemd')\n")
    make_image(folders.inbox / "x.png")
    daemon = spawn(folders.config, "--once", NOTIFY_SOCKET=str(notify_socket.path),
                   PYTHONPATH=os.pathsep.join(map(str, (fake.parent, PLUGINS, REPO))))
    assert daemon.wait(timeout=60) == 0, daemon.log
    warnings = [e for e in daemon.events() if "systemd-python is not installed" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert (folders.outbox / "x.mp4").is_file()
    assert notify_socket.received == []


JOURNAL_DIR = Path("/run/systemd/journal")


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[Datagrams, list[str]]]:
    """A journald socket of the test's own, seen by the daemon at /run/systemd/journal/socket inside a
    private mount namespace (a bind mount there), and a JOURNAL_STREAM naming the daemon's real stderr,
    as systemd sets them for a unit whose output goes to the journal."""
    if os.geteuid() != 0:
        pytest.fail("this test binds a journald socket in a mount namespace: it needs root (CI runs as root)")
    created = not JOURNAL_DIR.exists()
    JOURNAL_DIR.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "journal"
    folder.mkdir()
    sock = Datagrams(folder / "socket")
    script = ('mount --bind "$0" /run/systemd/journal && '
              'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && export JOURNAL_STREAM && exec "$@"')
    yield sock, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(folder)]
    sock.close()
    if created:
        JOURNAL_DIR.rmdir()


def test_under_systemd_logs_are_journal_entries_with_one_field_per_key(
        folders: Folders, journald: tuple[Datagrams, list[str]]) -> None:
    sock, prefix = journald
    folders.write_config(log_format="auto")
    make_image(folders.inbox / "fox.png")
    (folders.inbox / "fox.yaml").write_text("prompt: a fox\n")
    make_image(folders.inbox / "bad.png")
    (folders.inbox / "bad.yaml").write_text("prompt: x\nnum_frames: 100000\n")
    run = subprocess.run([*prefix, sys.executable, "-m", "i2v_watcher", "run", "--once", "--config",
                          str(folders.config)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": f"{PLUGINS}:{REPO}"}, cwd=REPO)
    assert run.returncode == 3, run.stderr
    assert run.stderr == "", "under the journal nothing goes to stderr"
    entries = [journal_entry(data) for _, data in sock.received]
    assert entries and all(e["SYSLOG_IDENTIFIER"] == "i2v-watcher" and "MESSAGE" in e for e in entries)
    published = next(e for e in entries if e["MESSAGE"].startswith("published"))
    job_id = published["JOB_ID"]
    assert published["JOB"] == "fox" and published["WORKER_ID"] == "testhost" and published["PRIORITY"] == "6"
    one_job = [e for e in entries if e.get("JOB_ID") == job_id]
    assert {e.get("STAGE") for e in one_job} >= {"generate", "publish"}, one_job
    failed = [e for e in entries if e.get("JOB") == "bad" and e["PRIORITY"] in ("3", "4")]
    assert failed, [e["MESSAGE"] for e in entries]
    assert all(e.get("WORKER_ID") == "testhost" for e in entries if "JOB_ID" in e)
