"""Cancel, priority, pause, drain and resume on the dashboard, and its list of recent actions, against
a running `i2v-watcher web` (no daemon: the queued jobs stay queued until acted on; a worker on
another host is its heartbeat)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any
from urllib.parse import unquote_plus, urlencode

from test_liveness import write_beat

from conftest import REPO, Folders, daemon_env, make_image
from web.conftest import TOKEN, WebServer, writable
from web.test_security import BEARER, request

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post(server: WebServer, path: str, fields: dict[str, str],
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return request(server, "POST", path, urlencode(fields).encode(), {**FORM, **(headers or BEARER)})


def status(server: WebServer) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(request(server, "GET", "/api/status")[2])
    return answer


def ready(server: WebServer, count: int) -> list[dict[str, Any]]:
    """The ready rows of the queue, once `count` jobs are ready (their files settled)."""
    deadline = time.monotonic() + 10
    while True:
        rows = [row for row in status(server)["queue"] if row["why"] == "ready"]
        if len(rows) == count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def sign_in(server: WebServer) -> tuple[dict[str, str], str]:
    """A browser's session: its cookie, and the CSRF token the dashboard's forms carry."""
    headers = request(server, "POST", "/login", f"token={TOKEN}".encode(), FORM)[1]
    session = {"Cookie": headers["set-cookie"].split(";", 1)[0], "Origin": server.url}
    page = request(server, "GET", "/", headers=session)[2].decode()
    form = r'action="/(?:jobs|workers)/[a-z]+"[^<]*<input type="hidden" name="csrf" value="([0-9a-f]+)"'
    found = re.search(form, page)
    assert found is not None, page
    return session, found.group(1)


def test_cancel_and_priority_need_the_token(folders: Folders, web: Any) -> None:
    make_image(folders.inbox / "fox.png")
    server = web(**writable())
    for path, fields in (("/jobs/cancel", {"name": "fox"}),
                         ("/jobs/priority", {"name": "fox", "priority": "5"})):
        assert post(server, path, fields, {"Accept": "application/json"})[0] == 401
        assert post(server, path, fields, {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    session, _ = sign_in(server)
    assert post(server, "/jobs/cancel", {"name": "fox"}, session)[0] == 403  # the cookie alone: no CSRF
    assert sorted(p.name for p in folders.inbox.iterdir()) == ["fox.png"]
    assert status(server)["actions"] == [] and status(server)["pauses"] == []
    page = request(server, "GET", "/")[2].decode()  # not signed in: no buttons, a way to sign in
    assert 'action="/jobs/' not in page and "Sign in to cancel" in page

    # A pause from the command line (no worker runs: it is in force at once) is on the board and
    # in the recent actions, with the login that paused.
    cli = subprocess.run([sys.executable, "-m", "i2v_watcher", "pause", "--config", str(folders.config)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=daemon_env())
    assert cli.returncode == 0, cli.stderr
    time.sleep(0.6)  # the board's snapshot is at most REFRESH_S old
    answer = status(server)
    assert answer["pauses"][0].startswith("paused: every worker (by ")
    assert [(a["kind"], a["what"]) for a in answer["actions"]] == [("paused", "paused every worker")]
    assert "paused: every worker" in request(server, "GET", "/")[2].decode()


def test_a_queued_job_is_cancelled_and_reordered_from_the_dashboard(folders: Folders, web: Any) -> None:
    for name in ("first", "second", "third<b>"):
        make_image(folders.inbox / f"{name}.png")
    server = web(**writable())
    assert [r["priority"] for r in ready(server, 3)] == [0, 0, 0]
    session, csrf = sign_in(server)
    who = re.compile(r"web session [0-9a-f]{8} from 127\.0\.0\.1")

    answer = post(server, "/jobs/priority", {"name": "second", "priority": "9", "csrf": csrf}, session)
    assert answer[0] == 303 and unquote_plus(answer[1]["location"]) == "/?notice=second: priority 9"
    assert post(server, "/jobs/priority", {"name": "second", "priority": "500"})[0] == 409  # out of range
    assert post(server, "/jobs/priority", {"name": "nobody", "priority": "1"})[0] == 409
    rows = ready(server, 3)
    assert (rows[0]["job"], rows[0]["priority"]) == ("second", 9)

    answer = post(server, "/jobs/cancel", {"name": "first", "csrf": csrf}, session)
    assert answer[0] == 303 and "first" in unquote_plus(answer[1]["location"])
    assert "first.png" not in {p.name for p in folders.inbox.iterdir()}
    reports = list(folders.failed.rglob("*.json"))
    assert reports and any(who.search(p.read_text()) and "cancelled" in p.read_text() for p in reports)
    assert any(p.name == "first.png" for p in folders.failed.rglob("*"))
    assert post(server, "/jobs/cancel", {"name": "first"})[0] == 404  # gone from the queue
    assert post(server, "/jobs/cancel", {"name": "third<b>"})[0] == 200  # by API client, with the token

    actions = status(server)["actions"]
    assert [a["what"] for a in actions] == ["cancelled third<b>", "cancelled first",
                                            "set the priority of second to 9"]
    assert who.fullmatch(actions[1]["by"]) and actions[0]["by"] == "web API token from 127.0.0.1"
    page = request(server, "GET", "/")[2].decode()
    assert "cancelled third&lt;b&gt;" in page and "third<b>" not in page


def test_a_worker_and_the_share_paused_drained_and_resumed_from_the_dashboard(
        folders: Folders, web: Any) -> None:
    server = web(**writable())
    # A live worker on another host, whose heartbeat does not say paused yet.
    write_beat(folders.work / "w1", interval_s=30.0, backend="preview")
    for path in ("/workers/pause", "/workers/drain", "/workers/resume"):
        assert post(server, path, {}, {"Accept": "application/json"})[0] == 401
        assert post(server, path, {"worker": "w1"},
                    {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    assert 'action="/workers/' not in request(server, "GET", "/")[2].decode()  # not signed in: no buttons
    session, csrf = sign_in(server)
    assert post(server, "/workers/pause", {}, session)[0] == 403  # the cookie alone: no CSRF
    elsewhere = {**session, "Origin": "http://elsewhere.example"}
    assert post(server, "/workers/drain", {"csrf": csrf}, elsewhere)[0] == 403
    assert not (folders.work / ".control").exists() and status(server)["actions"] == []
    who = re.compile(r"web session [0-9a-f]{8} from 127\.0\.0\.1")
    page = request(server, "GET", "/", headers=session)[2].decode()
    assert 'action="/workers/pause"' in page and 'name="worker" value="w1"' in page

    answer = post(server, "/workers/pause", {"worker": "w1", "csrf": csrf}, session)
    assert answer[0] == 303 and unquote_plus(answer[1]["location"]).startswith("/?notice=pausing worker w1")
    held = json.loads((folders.work / ".control" / "pause-w1").read_text())
    assert who.fullmatch(held["by"]) and held["at"] and held["drain"] is None
    time.sleep(0.6)  # the board's snapshot is at most REFRESH_S old
    page = request(server, "GET", "/", headers=session)[2].decode()
    assert '<span class="state pausing">pausing…</span>' in page  # until its heartbeat says so
    write_beat(folders.work / "w1", interval_s=30.0, backend="preview", paused=True)
    time.sleep(0.6)
    page = request(server, "GET", "/", headers=session)[2].decode()
    assert '<span class="state paused">paused</span>' in page and "paused: worker w1 (by web session" in page

    assert post(server, "/workers/drain", {"csrf": csrf}, session)[0] == 303  # the whole share
    assert post(server, "/workers/pause", {"worker": "../w1", "csrf": csrf}, session)[0] == 400
    answer = status(server)
    assert set(answer["paused"]) == {"all", "w1"} and answer["paused"]["all"]["drain"]
    assert any(line.startswith("draining: every worker (by web session ") for line in answer["pauses"])
    assert "paused (drain)" in request(server, "GET", "/", headers=session)[2].decode()

    assert post(server, "/workers/resume", {"csrf": csrf}, session)[0] == 303
    answer = post(server, "/workers/resume", {"worker": "w1"}, {"Accept": "application/json", **BEARER})
    assert json.loads(answer[2]) == {"target": "w1", "action": "resume", "resumed": True,
                                     "message": "resumed worker w1"}
    answer = post(server, "/workers/resume", {"worker": "w1"}, {"Accept": "application/json", **BEARER})
    assert json.loads(answer[2])["message"] == "worker w1 was not paused"  # said, and not logged
    time.sleep(0.6)
    answer = status(server)
    assert answer["paused"] == {} and answer["pauses"] == []
    page = request(server, "GET", "/", headers=session)[2].decode()
    assert '<span class="state resuming">resuming…</span>' in page  # its heartbeat still says paused
    actions = answer["actions"]
    assert [a["what"] for a in actions] == ["resumed worker w1", "resumed every worker",
                                            "drained every worker", "paused worker w1"]
    assert actions[0]["by"] == "web API token from 127.0.0.1"
    assert all(who.fullmatch(a["by"]) for a in actions[1:])
    no_retry = web(web_allow_retry=False)  # retry (so every control) off: refused even with the token
    assert post(no_retry, "/workers/pause", {})[0] == 403
    assert not list((folders.work / ".control").glob("pause-*"))
