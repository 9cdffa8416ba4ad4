"""What the dashboard bounds, in process: the size of a page of a large queue or of failed/, how often a
failure report is read, how long a session lasts (an injected clock), how fast a token may be guessed,
and which Host names it answers to. The same against a real server: tests/faults/test_web_hostile.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from i2v_watcher.config.settings import Settings
from i2v_watcher.ops import reports as reports_module
from i2v_watcher.web import board as board_module
from i2v_watcher.web.app import create_app
from i2v_watcher.web.hosts import AllowedHosts
from i2v_watcher.web.sessions import MAX_SESSIONS, Sessions, SigninThrottle

QUEUED = 5_000


def settings(root: Path, **extra: Any) -> Settings:
    for name in ("inbox", "outbox", "failed", "done", "work"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return Settings(**{name: root / name for name in ("inbox", "outbox", "failed", "done", "work")},
                    settle_s=0.0, sidecar_grace_s=0.0, **extra)


def client(values: Settings) -> TestClient:
    return TestClient(create_app(values), base_url="http://127.0.0.1:8080")  # web_listen's default


def test_a_large_queue_is_sent_a_page_at_a_time_with_its_count(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board_module, "REFRESH_S", 600.0)  # one snapshot for every request below
    values = settings(tmp_path)
    for index in range(QUEUED):
        (values.inbox / f"img{index:05d}.png").write_bytes(b"\x89PNG not really")
    web = client(values)

    live = web.get("/live")
    assert live.status_code == 200
    assert len(live.content) < 40_000, len(live.content)  # 24 rows, not 5,000 (about 1.1 MB)
    assert f'id="count-queued">{QUEUED}<' in live.text
    assert live.text.count("<tr data-job=") == values.web_page_size
    assert "img00000" in live.text and "page 1 of 209" in live.text
    second = web.get("/?page=2").text
    assert "img00024" in second and "img00000" not in second and 'data-live="/live?page=2"' in second

    status = web.get("/api/status?page=3&per_page=50").json()
    assert status["counts"]["queued"] == QUEUED and len(status["queue"]) == 50
    assert status["queue"][0]["job"] == "img00100" and status["page"]["queue_pages"] == 100
    assert len(web.get("/api/status").content) < 40_000
    assert web.get("/api/status?page=101&per_page=50").json()["queue"] == []  # past the end: empty


def test_failed_jobs_are_paged_and_each_report_is_read_once_per_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = settings(tmp_path)
    for index in range(60):
        report(values.failed, f"job{index:02d}", "the sidecar has a typo")
    web = client(values)
    reads: list[Path] = []
    real = reports_module._failed_entry
    monkeypatch.setattr(reports_module, "_failed_entry",
                        lambda failed, rel: reads.append(rel) or real(failed, rel))
    monkeypatch.setattr(board_module, "REFRESH_S", 0.0)  # every request takes a new snapshot

    pages = [web.get(f"/failed?page={n}").text for n in (1, 2, 3)]
    assert [page.count('class="card failed"') for page in pages] == [24, 24, 12]
    assert "job00" in pages[0] and "job59" in pages[2] and "page 3 of 3" in pages[2]
    assert len(reads) == 60  # three snapshots, each report read once
    report(values.failed, "job07", "edited")
    os.utime(values.failed / "job07.error.json", ns=(1, 1))
    assert "edited" in web.get("/failed").text
    assert reads[60:] == [Path("job07.error.json")]


def report(failed: Path, name: str, message: str) -> None:
    (failed / f"{name}.error.json").write_text(json.dumps(
        {"stage": "sidecar", "message": message, "input": name, "files": [f"{name}.png"]}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_ends_at_sign_out_and_dies_with_the_process() -> None:
    clock = Clock()
    sessions = Sessions(b"t" * 24, lifetime_s=60, clock=clock)
    cookie = sessions.open()
    nonce = cookie.split(".")[0]
    assert sessions.find(cookie) == nonce
    clock.now += 59
    assert sessions.find(cookie) == nonce
    clock.now += 1
    assert sessions.find(cookie) is None  # expired: replaying the cookie gets nothing

    other = sessions.open()
    sessions.close(other)
    assert sessions.find(other) is None  # signed out
    kept = sessions.open()
    assert Sessions(b"t" * 24, lifetime_s=60, clock=clock).find(kept) is None  # a restarted process
    assert sessions.find(f"{nonce}.{'0' * 64}") is None and sessions.find("") is None

    for _ in range(MAX_SESSIONS + 5):
        sessions.open()
    assert len(sessions._expires) == MAX_SESSIONS and sessions.find(kept) is None  # the oldest went


def test_wrong_tokens_are_throttled_per_client_and_in_all() -> None:
    clock = Clock()
    throttle = SigninThrottle(per_client=2, clock=clock)
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0
    clock.now += 10
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 50 and throttle.wait_s("10.0.0.2") == 0
    clock.now += 49
    assert throttle.wait_s("10.0.0.1") == 1
    clock.now += 1
    assert throttle.wait_s("10.0.0.1") == 0  # the first failure has left the minute
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 10  # until the second one leaves it
    for index in range(20):  # many addresses, one failure each: the limit in all (ten times 2)
        throttle.failed(f"10.1.0.{index}")
    assert throttle.wait_s("10.9.9.9") == 60


def test_the_host_names_it_answers_to(tmp_path: Path) -> None:
    default = AllowedHosts(settings(tmp_path))
    assert all(default.allows(h) for h in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080",
                                           "LOCALHOST.:8080"))
    assert not any(default.allows(h) for h in ("localhost", "localhost:8081", "10.0.0.5:8080",
                                                "evil.example:8080", "[::1", "", "a b:8080"))
    wide = AllowedHosts(settings(tmp_path, web_listen="0.0.0.0:8080"))
    assert wide.allows("10.0.0.5:8080") and wide.allows("[fe80::1]:8080") and wide.allows("localhost:8080")
    assert not wide.allows("evil.example:8080") and not wide.allows("10.0.0.5:9999")
    listed = AllowedHosts(settings(tmp_path, web_allowed_hosts=["Dash.Example.net", "10.0.5.7:8443"]))
    assert listed.allows("dash.example.net") and listed.allows("dash.example.net:443")
    assert listed.allows("10.0.5.7:8443") and not listed.allows("10.0.5.7:8080")
    assert not listed.allows("localhost:8080")  # a list replaces the default
    for wrong in ("dash.example.net:99999", "dash/example", "[::1"):
        with pytest.raises(ValidationError, match="web_allowed_hosts"):
            settings(tmp_path, web_allowed_hosts=[wrong])


def test_a_guessed_bearer_token_counts_as_a_failed_sign_in(tmp_path: Path) -> None:
    web = client(settings(tmp_path, web_allow_retry=True, web_token="x" * 24, web_signin_failures=1))
    wrong = {"Authorization": "Bearer " + "y" * 24, "Accept": "application/json"}
    assert web.post("/failed/retry", data={"name": "x"}, headers=wrong).status_code == 401
    answer = web.post("/failed/retry", data={"name": "x"}, headers=wrong)
    assert answer.status_code == 429 and re.fullmatch(r"\d+", answer.headers["retry-after"])
