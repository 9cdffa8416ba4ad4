"""Issue 18's hostile load against the dashboard (`web`), all at once: slow clients holding sockets,
ranges of 5,000 digits, clients that close before the answer, parallel thumbnails of an 8000x8000 image,
requests for a rebound host name, a burst of bad sign-ins. The process survives with its memory and
descriptors bounded, and answers /healthz at once throughout.

The daemon's and a Celery worker's share is tests/faults/test_hostile_load.py."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from conftest import Folders, IdleSockets, make_image, wait_for
from web.conftest import TOKEN, WebServer


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def request(server: WebServer, path: str, headers: dict[str, str] | None = None,
            method: str = "GET", body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{server.port}", **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def abrupt_get(server: WebServer, path: str) -> None:
    """Send a request and close the connection before reading a byte of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())


def healthz_s(server: WebServer) -> float:
    started = time.monotonic()
    assert request(server, "/healthz") == 200
    return time.monotonic() - started


def web_load(server: WebServer) -> None:
    """Every hostile request of the issue, in parallel where an attacker would send them in parallel."""
    huge_range = {"Range": "bytes=" + "9" * 5000 + "-"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        ranged = set(pool.map(lambda _: request(server, "/files/clip.mp4", huge_range), range(50)))
        assert ranged <= {200, 206, 416}, ranged
        list(pool.map(lambda _: abrupt_get(server, "/files/clip.mp4"), range(200)))
        thumbs = list(pool.map(lambda _: request(server, "/thumbs/outbox/huge.png"), range(8)))
        assert all(status < 500 for status in thumbs), thumbs
        hosts = set(pool.map(lambda _: request(server, "/", {"Host": "rebound.example"}), range(20)))
        assert hosts and all(400 <= status < 500 for status in hosts), hosts
        logins = list(pool.map(lambda _: request(
            server, "/login", {"Content-Type": "application/x-www-form-urlencoded"}, "POST",
            b"token=wrong-token-0123456789"), range(30)))
        assert 429 in logins, logins


def test_the_dashboard_survives_the_hostile_load(folders: Folders, web: Callable[..., WebServer]) -> None:
    folders.outbox.mkdir(parents=True, exist_ok=True)
    (folders.outbox / "clip.mp4").write_bytes(os.urandom(256 * 1024))
    Image.new("1", (8000, 8000)).save(folders.outbox / "huge.png")  # small on disk, 64 Mpx decoded
    for index in range(3):
        make_image(folders.inbox / f"queued{index}.png", seed=index)
    server = web(web_token=TOKEN, web_allow_retry=True)
    pid = server.process.pid
    request(server, "/healthz")
    baseline = open_descriptors(pid)
    slow = IdleSockets(server.port, 200)  # never finish their headers
    for sock in slow.sockets[:100]:
        with contextlib.suppress(OSError):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    peak = [0.0]
    watching = threading.Event()

    def watch_memory() -> None:
        while not watching.is_set():
            with contextlib.suppress(OSError, ValueError):
                peak[0] = max(peak[0], resident_mb(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    try:
        assert healthz_s(server) < 2.0  # answered while the slow sockets are held
        web_load(server)
        assert healthz_s(server) < 2.0
    finally:
        watching.set()
        watcher.join()
        slow.close()
    assert server.process.poll() is None
    assert peak[0] < 600, f"the web process grew to {peak[0]:.0f} MB"
    wait_for(lambda: open_descriptors(pid) <= baseline + 10, timeout=30,
             what=f"the web process's descriptors back near {baseline} (now {open_descriptors(pid)})")
    with urllib.request.urlopen(f"{server.url}/files/clip.mp4", timeout=10) as response:
        assert len(response.read()) == 256 * 1024  # every file still served
