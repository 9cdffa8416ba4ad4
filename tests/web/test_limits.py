"""The dashboard's limits that need no daemon: which byte ranges it serves, the open-files limit it needs
for web_max_connections, and its server's tick (a server in a thread). The limits against a real `web`
process: tests/faults/test_web_limits.py."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from typing import Any

import pytest
import uvicorn

from conftest import Folders
from i2v_watcher.config.settings import load_settings
from i2v_watcher.errors import StartupError
from i2v_watcher.web import server as http_server
from i2v_watcher.web.files import Unsatisfiable, byte_range
from web.conftest import free_port

HUGE = "9" * 5000  # Python refuses to convert a string this long to an int at all


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=10-19", (10, 10)), ("bytes=90-", (90, 10)), ("bytes=-5", (95, 5)), ("bytes=0-999", (0, 100)),
    ("bytes=0-", (0, 100)), (f"bytes=0-{HUGE}", (0, 100)), (f"bytes=-{HUGE}", (0, 100)),
    ("bytes=0-1,5-6", None), ("items=0-5", None), ("bytes=-", None), ("bytes=\u0661-\u0662", None),
    ("bytes=100-", Unsatisfiable), ("bytes=-0", Unsatisfiable), ("bytes=20-10", Unsatisfiable),
    (f"bytes={HUGE}-", Unsatisfiable), (f"bytes={HUGE}-{HUGE}", Unsatisfiable),
])
def test_byte_ranges_of_a_100_byte_file(header: str, expected: Any) -> None:
    """(start, length); None: the whole file (not served as a range); Unsatisfiable: a 416."""
    if expected is Unsatisfiable:
        with pytest.raises(Unsatisfiable):
            byte_range(header, 100)
    else:
        assert byte_range(header, 100) == expected


def test_the_open_files_limit_is_raised_to_fit_the_connections_or_the_start_is_refused(
        monkeypatch: pytest.MonkeyPatch, folders: Folders) -> None:
    settings = load_settings(folders.write_config(web_max_connections=1000))
    limits = {"now": (256, 4096)}
    monkeypatch.setattr(http_server.resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(http_server.resource, "setrlimit", lambda _, new: limits.update(now=new))
    http_server.ensure_descriptors(settings)
    assert limits["now"] == (1000 + http_server.SPARE_DESCRIPTORS, 4096)
    limits["now"] = (256, 512)
    with pytest.raises(StartupError, match="web_max_connections = 1000 needs 1384 open files"):
        http_server.ensure_descriptors(settings)


def serve_in_thread(port: int) -> tuple[http_server.QuietServer, threading.Thread]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    server = http_server.QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                                    log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)  # not the main thread: no signals taken
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server never started"
        time.sleep(0.02)
    return server, thread


def date_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return str(response.headers["Date"])


def test_the_quiet_server_renews_its_date_and_wakes_at_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """It ticks once a second, not ten times; the Date header still moves on, and a stop signal does not
    wait for the tick (here an hour long: the test would hang)."""
    port = free_port()
    server, thread = serve_in_thread(port)
    first = date_of(port)
    time.sleep(2.2)
    assert date_of(port) != first
    monkeypatch.setattr(http_server, "TICK_S", 3600.0)
    time.sleep(1.2)  # the running wait ends; the next one is an hour long
    server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
    thread.join(timeout=30)
    assert not thread.is_alive(), "the stop did not wake the server"
