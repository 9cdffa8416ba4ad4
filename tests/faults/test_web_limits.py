"""Hostile clients of the dashboard, against a real `i2v-watcher web` on a real socket: descriptors that
must never leak (huge Range headers, clients that hang up), connections that never finish their request
(a deadline and a cap), images whose pixels cost far more than their bytes (thumbnails and submit
decode bounded, and off the event loop). The web process is measured from /proc: its open
descriptors and its peak resident memory (VmHWM)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image
from web.conftest import WebServer, writable
from web.conftest import web as web  # the fixture that starts `i2v-watcher web`
from web.test_hostile_load import open_descriptors
from web.test_security import BEARER, multipart

from conftest import Folders

HUGE = "9" * 5000  # Python refuses to convert a string this long to an int at all


def descriptors(server: WebServer) -> int:
    return open_descriptors(server.process.pid)


def peak_rss_mb(server: WebServer) -> float:
    """The process's peak resident memory so far (VmHWM), in MB: no sampling can miss the peak."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024


def connect(server: WebServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def get(server: WebServer, path: str, headers: str = "") -> tuple[int, bytes]:
    """One request on its own connection, read to the end: (status, body)."""
    with connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def healthz_seconds(server: WebServer) -> float:
    started = time.monotonic()
    assert get(server, "/healthz") == (200, b"ok")
    return time.monotonic() - started


def settle(measure: Callable[[], int], at_most: int, within_s: float = 5.0) -> int:
    deadline = time.monotonic() + within_s
    while (now := measure()) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def flat_png(path: Path, size: tuple[int, int]) -> Path:
    """A grey PNG of `size` pixels that is a few KB on disk (what costs is decoding it)."""
    Image.new("L", size, 128).save(path, compress_level=1)
    return path


def test_no_descriptor_leaks_on_huge_ranges_or_clients_that_hang_up(folders: Folders,
                                                                   web: Any) -> None:
    clip = os.urandom(256 * 1024) * 8  # 2 MiB: still streaming when the client is gone
    (folders.root / "outbox").mkdir()
    (folders.root / "outbox" / "x.mp4").write_bytes(clip)
    server = web()
    assert get(server, "/files/x.mp4") == (200, clip)
    before = descriptors(server)

    for n in range(50):  # absurd numbers: a 416, or the whole file; never a 500
        assert get(server, "/files/x.mp4", f"Range: bytes={HUGE}-\r\n")[0] == 416
        if n % 10 == 0:
            assert get(server, "/files/x.mp4", f"Range: bytes=0-{HUGE}\r\n") == (206, clip)
            assert get(server, "/files/x.mp4", f"Range: bytes=-{HUGE}\r\n") == (206, clip)
    assert get(server, "/files/x.mp4", "Range: bytes=10-19\r\n") == (206, clip[10:20])

    for n in range(200):  # hang up at once (half with a reset), or after the first bytes
        sock = connect(server)
        sock.sendall(f"GET /files/x.mp4 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        if n % 4 == 3:
            sock.recv(4096)
        if n % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    left = settle(lambda: descriptors(server), before + 2)
    assert left <= before + 2, f"{left - before} descriptors more than before the 261 requests"
    assert get(server, "/files/x.mp4") == (200, clip)


def test_unfinished_requests_are_timed_out_and_capped_while_healthz_answers(web: Any) -> None:
    server = web(web_header_timeout_s=1.5, web_max_connections=64)
    before = descriptors(server)
    held = []
    for _ in range(200):  # each sends half a request line and then nothing
        sock = connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1")
        held.append(sock)
    try:
        assert max(healthz_seconds(server) for _ in range(5)) < 1.0
        # The cap: the oldest of the stalled connections made way for the newer ones and for /healthz.
        assert settle(lambda: descriptors(server), before + 64 + 2) <= before + 64 + 2
        time.sleep(1.6)  # past the deadline: every stalled connection has been closed by the server
        for sock in held:
            sock.settimeout(2)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
        assert settle(lambda: descriptors(server), before + 2) <= before + 2
    finally:
        for sock in held:
            sock.close()


def test_parallel_thumbnails_of_huge_images_stay_within_a_memory_bound(folders: Folders,
                                                                       web: Any) -> None:
    first = flat_png(folders.inbox / "huge-0.png", (8000, 8000))  # 64 MB decoded, a few KB on disk
    for n in (1, 2):  # three files, more than the two decodes allowed at once
        shutil.copy(first, folders.inbox / f"huge-{n}.png")
    server = web()
    baseline = peak_rss_mb(server)
    paths = [f"/thumbs/inbox/huge-{n % 3}.png" for n in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda path: get(server, path), paths))
    for status, body in answers:
        assert status == 200 and Image.open(io.BytesIO(body)).size == (320, 320)
    grown = peak_rss_mb(server) - baseline
    # Two decodes at a time (64 MB each, with what the reduction needs: 130 MB), never eight (900 MB).
    assert grown < 300, f"the web process grew by {grown:.0f} MB for 8 thumbnails"


def test_healthz_answers_while_a_huge_upload_is_checked(folders: Folders, web: Any,
                                                        tmp_path: Path) -> None:
    image = flat_png(tmp_path / "big.png", (7900, 7900)).read_bytes()
    body, kind = multipart({"prompt": "a slow pan"}, {"image": ("big.png", image, "image/png")})
    server = web(**writable())
    answer: dict[str, Any] = {}

    def send() -> None:
        with connect(server) as sock:
            sock.settimeout(60)
            head = (f"POST /submit HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in BEARER.items()) + "\r\n")
            sock.sendall(head.encode() + body)
            answer["reply"] = sock.makefile("rb").read()

    sender = threading.Thread(target=send)
    sender.start()
    slowest = 0.0
    while sender.is_alive():
        slowest = max(slowest, healthz_seconds(server))
        time.sleep(0.02)
    sender.join()
    assert answer["reply"].startswith(b"HTTP/1.1 201"), answer["reply"][:300]
    assert slowest < 0.5, f"/healthz took {slowest:.2f} s while the upload was decoded"


def test_a_write_without_the_token_is_refused_before_its_body_is_read(
        folders: Folders, web: Callable[..., WebServer]) -> None:
    """A client without the token cannot hold a connection by sending a large body slowly: the answer
    comes from the headers alone, while the body is still to be sent."""
    server = web(**writable())
    for path in ("/submit", "/failed/retry"):
        with connect(server) as sock:
            sock.settimeout(5)
            origin = f"127.0.0.1:{server.port}"
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {origin}\r\nOrigin: http://{origin}\r\n"
                         "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 40000000\r\n\r\n"
                         .encode())
            answer = sock.recv(4096)  # times out (an error) where the server waits for the body first
        assert answer.split()[1] == b"401", (path, answer[:200])
