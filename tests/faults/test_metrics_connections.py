"""Idle connections to `metrics_port` (issue 18, class 5): 300 sockets that sent nothing held 300 of the
daemon's descriptors and threads, and the daemon died of EMFILE elsewhere. A real daemon whose
RLIMIT_NOFILE is 256 survives 400 idle connections, publishes a job while they are held, and answers
/metrics afterwards; the server's bounds (a few connections at once, a deadline per connection) are
checked on the server itself with a short deadline; and the service loop takes running out of
descriptors as transient."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry, Counter

from conftest import Folders, make_image, wait_for
from faults.celery_helpers import free_port
from faults.conftest import Spawn
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.service import loop
from i2v_watcher.service.loop import Loop
from i2v_watcher.service.metrics_http import MAX_CONNECTIONS, BoundedWSGIServer, start_server
from i2v_watcher.service.parts import Part

FD_LIMIT = 256  # the daemon's RLIMIT_NOFILE here: fewer than the idle connections
IDLE = 400


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[int]:
    """`count` TCP connections, one after the other as a script would open them, that send nothing;
    yields how many were made (it stops trying after a few that could not connect). A full backlog drops
    a SYN, which the client sends again 1 s and 3 s after the first: hence the timeout."""
    sockets: list[socket.socket] = []
    failed = 0
    try:
        while len(sockets) < count and failed < 3:
            try:
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5.0))
            except OSError:
                failed += 1
        yield len(sockets)
    finally:
        for sock in sockets:
            sock.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_daemon_survives_more_idle_metrics_connections_than_it_has_descriptors(
        folders: Folders, spawn: Spawn) -> None:
    port = free_port()
    folders.write_config(metrics_port=port)
    daemon = spawn(folders.config)
    pid = daemon.process.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))  # before it has imported much
    daemon.read_until("watching")
    assert "i2v_jobs_total" in scrape(port)
    with idle_connections(port, IDLE) as connected:
        assert connected == IDLE  # every one got in: the kernel's backlog, then an accept and a close
        time.sleep(1.0)  # what held a thread and a descriptor each would have run out by now
        assert daemon.process.poll() is None, daemon.log
        assert descriptors(pid) < FD_LIMIT // 2, descriptors(pid)
        make_image(folders.inbox / "a.png")
        daemon.read_until("published", timeout=60)  # the loop, the stages, the moves: all still work
        assert daemon.process.poll() is None, daemon.log
    # The clients are gone: the connections that were served end at once (EOF), the rest were closed.
    counted = 'i2v_jobs_total{backend="preview",outcome="published"} 1.0'
    wait_for(lambda: counted in (_scrape_or_none(port) or ""), 10, "/metrics to answer with the job counted")
    assert sorted(folders.files("outbox")) == ["a.jpg", "a.json", "a.mp4"]
    assert not daemon.find("crashed") and "Traceback" not in daemon.log and "EMFILE" not in daemon.log


def _scrape_or_none(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None


@pytest.fixture
def server() -> Iterator[BoundedWSGIServer]:
    registry = CollectorRegistry()
    Counter("probe_total", "a counter to find in the answer", registry=registry).inc()
    started, thread = start_server("127.0.0.1", 0, registry)
    started.deadline_s = 0.6
    yield started
    started.shutdown()
    started.server_close()
    thread.join(5)


def test_the_server_serves_a_few_connections_at_once_each_for_a_bounded_time(
        server: BoundedWSGIServer) -> None:
    port = server.server_address[1]
    assert "probe_total 1.0" in scrape(port)
    threads = threading.active_count()
    with idle_connections(port, 50) as connected:
        assert connected == 50
        wait_for(lambda: server.open_connections() == MAX_CONNECTIONS, 5, "the slots to fill")
        time.sleep(0.2)
        assert server.open_connections() == MAX_CONNECTIONS  # the rest were closed, not queued for ever
        assert threading.active_count() <= threads + MAX_CONNECTIONS
        # A client that never finishes its request is cut off at the deadline, and a scrape gets in
        # while the idle clients are still connected.
        started = time.monotonic()
        text = wait_for(lambda: _scrape_or_none(port), 5, "a scrape while idle clients are connected")
        assert "probe_total 1.0" in text
        assert time.monotonic() - started < server.deadline_s + 2.0
    wait_for(lambda: server.open_connections() == 0, 5, "every connection closed")


def test_a_trickling_client_is_cut_off_at_the_deadline(server: BoundedWSGIServer) -> None:
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        for _ in range(50):  # 5 s of trickling, unless the server ends it
            if not trickle(sock):
                break
            time.sleep(0.1)
        closed_after = time.monotonic() - started
    assert closed_after < server.deadline_s + 1.5, closed_after  # not the 5 s the trickle would last


class StarvedListener:
    """The server's listening socket in a process out of descriptors: every accept fails."""

    def __init__(self, real: socket.socket) -> None:
        self.real, self.accepts = real, 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def close(self) -> None:
        self.real.close()


def test_out_of_descriptors_the_server_does_not_spin(server: BoundedWSGIServer) -> None:
    listener = StarvedListener(server.socket)
    server.socket = listener  # type: ignore[assignment]
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5):
        time.sleep(1.0)  # the connection stays pending: accept is tried again and again
    assert 3 <= listener.accepts <= 20, listener.accepts  # every 0.1 s, not in a busy loop


def trickle(sock: socket.socket) -> bool:
    """One more byte of a request line that never ends; False once the server has closed the
    connection."""
    try:
        sock.sendall(b"G")
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read: still open
    except OSError:
        return False  # reset or broken: closed


def test_a_port_in_use_is_an_oserror_with_nothing_left_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        threads = threading.active_count()
        with pytest.raises(OSError):
            start_server("127.0.0.1", taken.getsockname()[1], CollectorRegistry())
        assert threading.active_count() == threads


class Starved(Part):
    """A part whose ticks run out of file descriptors `times` times, then succeed."""

    def __init__(self, times: int, checkpoint: Checkpoint) -> None:
        self.left, self.ticks, self.checkpoint = times, 0, checkpoint

    def tick(self) -> None:
        self.ticks += 1
        if self.left:
            self.left -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        self.checkpoint.request_stop(0)


class IdleIntake:
    def take_one(self) -> bool:
        return False

    def drained(self) -> bool:
        return True

    def draining(self) -> bool:  # no drain asked (control.pause)
        return False

    def wait(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


def test_running_out_of_descriptors_in_the_loop_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever else holds the descriptors, the loop says so once and tries again; it does not crash."""
    monkeypatch.setattr(loop, "STARVED_PAUSE_S", 0.01)
    checkpoint = Checkpoint()
    part = Starved(3, checkpoint)
    with structlog.testing.capture_logs() as logged:
        Loop(checkpoint, [part], IdleIntake(), once=False).run()  # type: ignore[arg-type]
    assert part.ticks == 4 and checkpoint.stopping  # three starved turns, then one that stopped it
    events = [entry["event"] for entry in logged]
    assert events.count("out of file descriptors: trying again every second") == 1
    assert "file descriptors available again" in events
    with pytest.raises(OSError, match="Permission denied"):  # any other error is still one
        Loop(Checkpoint(), [Failing()], IdleIntake(), once=False).run()  # type: ignore[arg-type]


class Failing(Part):
    def tick(self) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")
