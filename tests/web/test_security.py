"""The cases web file servers and upload forms get wrong, against a running `i2v-watcher web`.

Requests go through http.client with the path sent exactly as written: a client library would
normalise `..` and percent-encodings away before the server ever saw them.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from conftest import REPO, Folders, daemon_env, make_image
from web.conftest import TOKEN, WebServer, writable

SECRET = b"top secret: never served"


def request(server: WebServer, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if isinstance(body, bytes):
            hdrs.setdefault("Content-Length", str(len(body)))
        for name, value in hdrs.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            if isinstance(body, bytes):
                conn.send(body)
            elif body is not None:  # an iterator of chunks: sent chunked, with no length announced
                for chunk in body:
                    conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) and closed before the whole body was sent
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "----i2vtestboundary7MA4YWxkTrZu0gW"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(f"{value}\r\n".encode())
    for name, (filename, data, kind) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: {kind}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def png_bytes(size: tuple[int, int] = (48, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 90, 30)).save(out, "PNG")
    return out.getvalue()


def inbox_files(folders: Folders) -> list[str]:
    """Everything in the inbox, hidden temporaries and reservations included."""
    return sorted(str(p.relative_to(folders.inbox)) for p in folders.inbox.rglob("*"))


BEARER = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}


def submit(server: WebServer, fields: dict[str, str], image: tuple[str, bytes, str] | None,
           headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body, kind = multipart(fields, {"image": image} if image else {})
    return request(server, "POST", "/submit", body, {"Content-Type": kind, **(headers or BEARER)})


# serving files


def test_files_are_served_only_from_the_outbox_and_never_through_a_path(folders: Folders, web: Any,
                                                                          tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    out = folders.root / "outbox"
    (out / "sub").mkdir(parents=True)
    clip = bytes(range(256)) * 40
    (out / "clip.mp4").write_bytes(clip)
    (out / "sub" / "x.json").write_text("{}")
    (out / ".hidden.mp4").write_bytes(SECRET)
    (out / "link.mp4").symlink_to(secret)
    (out / "linkdir").symlink_to(tmp_path)
    os.mkfifo(out / "fifo.mp4")
    (folders.inbox / "evil.png").symlink_to(secret)
    server = web()

    status, headers, body = request(server, "GET", "/files/clip.mp4")
    assert (status, body, headers["content-type"]) == (200, clip, "video/mp4")
    assert headers["accept-ranges"] == "bytes" and headers["x-content-type-options"] == "nosniff"
    assert request(server, "GET", "/files/sub/x.json")[0] == 200
    # A <video> seeks with byte ranges.
    status, headers, body = request(server, "GET", "/files/clip.mp4", headers={"Range": "bytes=2-5"})
    assert (status, body, headers["content-range"]) == (206, clip[2:6], f"bytes 2-5/{len(clip)}")
    assert request(server, "GET", "/files/clip.mp4", headers={"Range": "bytes=-3"})[2] == clip[-3:]
    assert request(server, "GET", "/files/clip.mp4", headers={"Range": f"bytes={len(clip)}-"})[0] == 416
    status, headers, body = request(server, "HEAD", "/files/clip.mp4")
    assert (status, headers["content-length"], body) == (200, str(len(clip)), b"")
    assert "attachment" in request(server, "GET", "/files/clip.mp4?download")[1]["content-disposition"]

    attempts = [
        "/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/%2E%2E%2Fsecret.txt",
        "/files/..%2fsecret.txt", "/files/%252e%252e%252fsecret.txt", "/files/sub/..%2f..%2fsecret.txt",
        "/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/..%5csecret.txt", "/files/link.mp4",
        "/files/linkdir/secret.txt", "/files/.hidden.mp4", "/files/fifo.mp4", "/files/clip.mp4%00.png",
        "/files/sub", "/files/", "/files/sub/.", "/thumbs/inbox/evil.png",
        "/thumbs/inbox/..%2f..%2fsecret.txt", "/thumbs/etc/passwd", "/thumbs/outbox/link.mp4",
        "/static/..%2f..%2fconfig.py", "/static/%2e%2e/app.py",
        f"/files/{tmp_path}/secret.txt".replace("//", "/"), f"/files/%2F{str(secret)[1:]}",
    ]
    for path in attempts:
        status, _, body = request(server, "GET", path)
        assert status in (400, 404, 405), (path, status)
        assert SECRET not in body and b"import" not in body, path


def test_thumbnails_are_decoded_under_the_daemons_limits(folders: Folders, web: Any) -> None:
    make_image(folders.inbox / "ok.png")
    make_image(folders.inbox / "huge.png", size=(200, 100))
    (folders.inbox / "text.png").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    server = web(max_image_pixels=10_000)
    status, headers, body = request(server, "GET", "/thumbs/inbox/ok.png")
    assert (status, headers["content-type"]) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(body)).size[0] <= 320
    status, _, body = request(server, "GET", "/thumbs/inbox/huge.png")
    assert status == 422 and b"max_image_pixels" in body
    assert request(server, "GET", "/thumbs/inbox/text.png")[0] == 422


# writes: read-only by default, then token, session and CSRF


def test_a_dashboard_is_read_only_unless_a_write_is_allowed(folders: Folders, web: Any) -> None:
    make_image(folders.root / "outbox" / "x.png")  # creates the outbox for the fixture's checks
    server = web(web_token=TOKEN)  # a token alone allows nothing
    status, _, body = submit(server, {"prompt": "a fox"}, ("a.png", png_bytes(), "image/png"))
    assert status == 403 and b"read-only" in body
    status, _, _ = request(server, "POST", "/failed/retry", b"name=x",
                           {"Content-Type": "application/x-www-form-urlencoded", **BEARER})
    assert status == 403
    assert inbox_files(folders) == []


def test_writes_need_the_token_and_cookie_writes_need_csrf(folders: Folders, web: Any) -> None:
    server = web(**writable())
    image = ("a.png", png_bytes(), "image/png")
    assert submit(server, {"prompt": "x"}, image, headers={"Accept": "application/json"})[0] == 401
    assert submit(server, {"prompt": "x"}, image,
                  headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = request(server, "POST", "/login", b"token=wrong&next=/submit", form)
    assert status == 401 and "set-cookie" not in headers
    status, headers, _ = request(server, "POST", "/login", f"token={TOKEN}&next=//evil.example/".encode(),
                                 form)
    assert status == 303 and headers["location"] == "/"  # never an open redirect
    cookie = headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain HTTP: a Secure cookie would never come back
    behind_tls = request(server, "POST", "/login", f"token={TOKEN}".encode(),
                         {**form, "Origin": f"https://127.0.0.1:{server.port}"})[1]["set-cookie"]
    assert "secure" in behind_tls.lower()  # a TLS proxy in front: the browser's Origin says https
    session = cookie.split(";", 1)[0]
    page = request(server, "GET", "/submit", headers={"Cookie": session})[2].decode()
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    signed_in = {"Cookie": session}

    # The cookie alone (what a forged cross-site form would carry) is refused.
    assert submit(server, {"prompt": "x"}, image, headers=signed_in)[0] == 403
    assert submit(server, {"prompt": "x", "csrf": "0" * 64}, image, headers=signed_in)[0] == 403
    assert submit(server, {"prompt": "x", "csrf": csrf.group(1)}, image,
                  headers={**signed_in, "Origin": "http://evil.example"})[0] == 403
    assert submit(server, {"prompt": "x", "csrf": csrf.group(1)}, image,
                  headers={**signed_in, "Sec-Fetch-Site": "cross-site"})[0] == 403
    forged = {"Cookie": "i2v_session=" + "a" * 32 + "." + "b" * 64}
    assert submit(server, {"prompt": "x", "csrf": csrf.group(1)}, image, headers=forged)[0] == 401
    # Another session's CSRF token does not fit this session.
    other = request(server, "POST", "/login", f"token={TOKEN}".encode(), form)[1]["set-cookie"].split(";")[0]
    assert submit(server, {"prompt": "x", "csrf": csrf.group(1)}, image, headers={"Cookie": other})[0] == 403
    assert inbox_files(folders) == []

    status, headers, _ = submit(server, {"prompt": "a fox", "csrf": csrf.group(1)}, image,
                                headers={**signed_in, "Origin": server.url})
    assert status == 303 and headers["location"].startswith("/follow?job=a&")
    assert inbox_files(folders) == ["a.png", "a.yaml"]


def test_a_short_or_missing_token_refuses_to_start(folders: Folders, tmp_path: Path) -> None:
    for name in ("outbox", "failed", "done", "work"):
        (folders.root / name).mkdir(exist_ok=True)
    config = folders.write_config(web_allow_retry=True, web_token="short")
    result = subprocess.run([sys.executable, "-m", "i2v_watcher", "web", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=daemon_env(), cwd=REPO)
    assert result.returncode == 2 and "web_token" in result.stderr


def test_the_token_can_come_from_the_environment(folders: Folders, web: Any) -> None:
    server = web(web_allow_submit=True, env={"I2V_WEB_TOKEN": TOKEN})
    status, _, body = submit(server, {"prompt": "from the API", "num_frames": "6"},
                             ("shot.png", png_bytes(), "image/png"))
    assert status == 201, body
    assert json.loads(body)["job"] == "shot"
    assert inbox_files(folders) == ["shot.png", "shot.yaml"]


# uploads


def test_uploads_are_capped_checked_by_content_and_never_half_visible(folders: Folders, web: Any) -> None:
    server = web(**writable(web_upload_max_mb=1, max_image_pixels=20_000))
    big = os.urandom(3 * 1024 * 1024)
    status, _, body = submit(server, {"prompt": "x"}, ("big.png", big, "image/png"))
    assert status == 413 and b"web_upload_max_mb" in body

    data, kind = multipart({"prompt": "x"}, {"image": ("big.png", big, "image/png")})

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is counted as the body arrives
        for start in range(0, len(data), 64 * 1024):
            yield data[start:start + 64 * 1024]
    status, _, _ = request(server, "POST", "/submit", chunks(),
                           {"Content-Type": kind, "Transfer-Encoding": "chunked", **BEARER})
    assert status == 413

    refused = {
        "not an image": ("photo.png", b"GIF89a not really" * 10, "image/png"),
        "html as png": ("x.png", b"<html><script>alert(1)</script></html>", "image/png"),
        "too many pixels": ("wide.png", png_bytes((400, 100)), "image/png"),
        "truncated": ("cut.png", png_bytes((120, 80))[:200], "image/png"),
        "empty": ("e.png", b"", "image/png"),
    }
    for what, image in refused.items():
        status, _, body = submit(server, {"prompt": "x"}, image)
        assert status == 400, (what, body)
    status, _, body = submit(server, {"prompt": "x", "name": "../escape"},
                             ("a.png", png_bytes(), "image/png"))
    assert status == 400 and b"job name" in body
    status, _, body = submit(server, {"num_frames": "100000"}, ("a.png", png_bytes(), "image/png"))
    assert status == 400 and b"num_frames" in body
    status, _, body = submit(server, {"postprocess": "no-such-preset"}, ("a.png", png_bytes(), "image/png"))
    assert status == 400 and b"no-such-preset" in body
    status, _, body = submit(server, {"steps": "many"}, ("a.png", png_bytes(), "image/png"))
    assert status == 400 and b"steps" in body
    assert inbox_files(folders) == []  # nothing refused left a trace, not even a temporary

    # The name comes from the content, not the client: PNG bytes sent as "../../etc/cron.d/x.jpg".
    status, _, body = submit(server, {"prompt": "ok"}, ("../../etc/cron.d/x\u202egnp.jpg", png_bytes(),
                                                        "image/jpeg"))
    assert status == 201, body
    job = json.loads(body)["job"]
    assert "/" not in job and "\u202e" not in job
    assert inbox_files(folders) == [f"{job}.png", f"{job}.yaml"]


def test_shared_folder_content_is_escaped_in_every_page(folders: Folders, web: Any) -> None:
    evil = "<script>alert(1)</script>"
    out = folders.root / "outbox"
    out.mkdir()
    (out / "x.mp4").write_bytes(b"\0" * 64)
    (out / "x.json").write_text(json.dumps({
        "job_id": "1", "name": "<img src=x onerror=alert(1)>", "prompt": evil, "published_at": "2026",
        "files": ["x.mp4", "x.json", "javascript:alert(1)"], "seed": evil, "parameters": {"k": evil}}))
    failed = folders.root / "failed"
    failed.mkdir()
    (failed / "bad.error.json").write_text(json.dumps({"stage": "load", "message": evil, "hint": evil,
                                                        "files": ["bad.png"], "input": "bad"}))
    make_image(folders.inbox / "<b>name</b>.png")
    server = web(**writable())
    for path in ("/", "/live", "/gallery", "/failed", "/gallery?q=%3Cscript%3E"):
        status, headers, body = request(server, "GET", path)
        assert status == 200
        assert b"<script>alert" not in body and b"<img src=x" not in body and b"<b>name" not in body, path
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
    gallery = request(server, "GET", "/gallery")[2]
    assert b"&lt;script&gt;" in gallery and b'href="javascript:' not in gallery
    assert b'href="/files/javascript%3Aalert%281%29?download"' in gallery  # a name, never a scheme
