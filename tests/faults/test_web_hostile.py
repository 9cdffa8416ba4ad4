"""Hostile clients of a real `i2v-watcher web` on a real socket: a web page rebound to 127.0.0.1 (DNS
rebinding), a stolen cookie replayed after sign-out, a token guessed in a loop; and a dashboard whose
clock is ten minutes ahead of the workers' (libfaketime), following a job to its clip."""

from __future__ import annotations

import glob
import http.client
import json
import re
import time
import urllib.parse
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from web.conftest import TOKEN, WebServer, writable
from web.conftest import web as web  # the fixture that starts `i2v-watcher web`
from web.test_security import multipart, png_bytes

from conftest import Folders, announce, make_image

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def call(server: WebServer, method: str, path: str, body: bytes = b"", host: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the Host header exactly as given (a browser on a rebound name sends its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
        for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sign_in(server: WebServer) -> str:
    status, headers, _ = call(server, "POST", "/login", f"token={TOKEN}".encode(), headers=FORM)
    assert status == 303, status
    return headers["set-cookie"].split(";", 1)[0]


def test_a_rebound_name_is_refused_and_folders_show_only_when_signed_in(folders: Folders, web: Any) -> None:
    make_image(folders.inbox / "secret-project.png")
    server = web(**writable())
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                 f"localhost:{port}@evil.example", f"localhost:{port + 1}", ""):
        for path in ("/api/status", "/", "/files/x.mp4", "/metrics"):
            status, headers, body = call(server, "GET", path, host=host)
            assert status == 400, (host, path, status)
            assert b"secret-project" not in body and b"web_allowed_hosts" in body
            assert headers["content-type"].startswith("text/plain")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LocalHost.:{port}"):
        status, _, body = call(server, "GET", "/api/status", host=host)
        assert status == 200 and b"secret-project" in body, host

    # The folders' absolute paths are in the footer for a signed-in person only.
    assert str(folders.inbox).encode() not in call(server, "GET", "/")[2]
    assert str(folders.inbox).encode() in call(server, "GET", "/", headers={"Cookie": sign_in(server)})[2]


def test_a_session_ends_at_sign_out_and_guessing_the_token_is_throttled(folders: Folders, web: Any) -> None:
    server = web(**writable(web_signin_failures=3))
    cookie = sign_in(server)
    page = call(server, "GET", "/submit", headers={"Cookie": cookie})[2].decode()
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None and "Sign out" in page
    retry = urllib.parse.urlencode({"name": "nothing", "csrf": csrf.group(1)}).encode()
    signed = {**FORM, "Cookie": cookie, "Origin": server.url}
    assert call(server, "POST", "/failed/retry", retry, headers=signed)[0] == 404  # signed in: no such job

    assert call(server, "POST", "/logout", headers={"Cookie": cookie, "Origin": server.url})[0] == 303
    # The same cookie, replayed (it was copied before the browser forgot it): the session is over.
    assert call(server, "POST", "/failed/retry", retry, headers=signed)[0] == 401
    assert "Sign out" not in call(server, "GET", "/submit", headers={"Cookie": cookie})[2].decode()

    for _ in range(3):
        assert call(server, "POST", "/login", b"token=guess-guess-guess-1", headers=FORM)[0] == 401
    for attempt in (b"token=guess-guess-guess-2", f"token={TOKEN}".encode()):  # even the right one waits
        status, headers, body = call(server, "POST", "/login", attempt, headers=FORM)
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 60, (status, headers)
        assert b"try again in" in body and "set-cookie" not in headers
    status, headers, _ = call(server, "POST", "/failed/retry", b"name=x",
                              headers={**FORM, "Authorization": "Bearer guess-guess-guess-3"})
    assert status == 429 and "retry-after" in headers


def test_the_follow_page_says_published_with_the_dashboards_clock_ten_minutes_ahead(folders: Folders,
                                                                                  web: Any) -> None:
    libraries = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libraries:
        pytest.fail("libfaketime missing: run tests/setup.sh (it installs the faketime package)")
    outbox = folders.root / "outbox"
    outbox.mkdir()
    clip(outbox, "fox", "2026-01-01T00:00:00+00:00")  # an earlier job of the same name
    server = web(**writable(), env={"LD_PRELOAD": libraries[0], "FAKETIME": "+10m",
                                    "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    status, headers, _ = call(server, "GET", "/healthz")
    ahead = (parsedate_to_datetime(headers["date"]) - datetime.now(UTC)).total_seconds()
    assert status == 200 and 540 < ahead < 660, ahead  # the dashboard's clock runs ten minutes ahead

    body, kind = multipart({"prompt": "a fox", "name": "fox"},
                           {"image": ("fox.png", png_bytes(), "image/png")})
    status, _, answer = call(server, "POST", "/submit", body, headers={
        "Content-Type": kind, "Authorization": f"Bearer {TOKEN}", "Accept": "application/json"})
    assert status == 201, answer
    follow = "/api/job?" + urllib.parse.urlsplit(json.loads(answer)["follow"]).query

    def state() -> dict[str, Any]:
        result: dict[str, Any] = json.loads(call(server, "GET", follow)[2])
        return result

    assert state()["state"] == "queued"
    for name in ("fox.png", "fox.yaml"):  # a worker claims the job...
        (folders.inbox / name).unlink()
    time.sleep(0.6)  # board.REFRESH_S
    assert state()["state"] == "unknown"  # (the earlier clip of the same name is not this job's)
    # ...and publishes it, stamping the time by its own clock, ten minutes behind the dashboard's.
    clip(outbox, "fox-1", datetime.now(UTC).isoformat(timespec="seconds"))
    time.sleep(0.6)
    assert state() | {"files": None} == {"state": "published", "name": "fox-1", "video": "fox-1.mp4",
                                         "poster": None, "files": None, "quality": None, "variant": None}


def clip(outbox: Any, name: str, published_at: str) -> None:
    """A published job's outputs, as a worker writes them (the metadata last)."""
    (outbox / f"{name}.mp4").write_bytes(b"\0" * 64)
    (outbox / f"{name}.json").write_text(json.dumps({
        "job_id": name, "name": name, "prompt": "a fox", "published_at": published_at,
        "input": {"path": "fox.png"}, "files": [f"{name}.mp4", f"{name}.json"]}))
    announce(outbox, f"{name}.json")
