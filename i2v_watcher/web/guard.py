"""Who may write, and how much: the token, the sign-in cookie, CSRF, and the request body cap.

Writes (submit, retry) are off unless the config allows them, and then need the token: either sent by
an API client as `Authorization: Bearer <token>` (a header a browser never adds by itself, so no CSRF
is possible), or typed once into the sign-in form, which sets a cookie. A cookie *is* sent by the
browser on a forged cross-site form, so every cookie-borne write also carries a CSRF token that only
our own pages know, and a cross-site Origin is refused outright. Everything is derived from the token
with HMAC and compared in constant time. Sessions expire, end on sign-out and with the process, and
wrong tokens are throttled (web.sessions says how and why).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.web.sessions import Sessions, SigninThrottle

log = structlog.get_logger("i2v_watcher.web")
COOKIE = "i2v_session"
MIN_TOKEN = 16
FORM_OVERHEAD = 1024 * 1024  # the form's text fields and multipart framing, on top of the image


class Forbidden(Exception):
    def __init__(self, message: str, status: int = 403, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, for a 429

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class Guard:
    def __init__(self, settings: Settings) -> None:
        secret = settings.web_token.get_secret_value() if settings.web_token is not None else ""
        self.writes = {"submit": settings.web_allow_submit, "retry": settings.web_allow_retry}
        if any(self.writes.values()) and len(secret) < MIN_TOKEN:
            raise StartupError(
                f"web_allow_submit / web_allow_retry need web_token (or I2V_WEB_TOKEN) of at least "
                f"{MIN_TOKEN} characters: every write through the dashboard is signed in with it "
                f"(e.g. I2V_WEB_TOKEN=$(openssl rand -hex 24))")
        self._key = secret.encode()
        self.sessions = Sessions(self._key, settings.web_session_s)
        self.throttle = SigninThrottle(settings.web_signin_failures)

    @property
    def any_write(self) -> bool:
        return any(self.writes.values())

    def token_matches(self, offered: str) -> bool:
        return bool(self._key) and hmac.compare_digest(
            hashlib.sha256(offered.encode()).digest(), hashlib.sha256(self._key).digest())

    def sign_in(self, token: object, client: str) -> str:
        """A new session's cookie for the right token; Forbidden (401, or 429 while `client` or everyone
        has guessed too often) otherwise."""
        if not self.any_write:
            raise Forbidden("this dashboard is read-only", 401)
        self._check_token(token if isinstance(token, str) else "", client)
        return self.sessions.open()

    def sign_out(self, request: Request) -> None:
        self.sessions.close(request.cookies.get(COOKIE, ""))

    def _check_token(self, offered: str, client: str) -> None:
        wait = self.throttle.wait_s(client)
        if wait:
            raise Forbidden(f"too many wrong tokens: try again in {wait} s", 429, retry_after=wait)
        if not self.token_matches(offered):
            self.throttle.failed(client)
            wait = self.throttle.wait_s(client)
            if wait:  # logged once as the brake engages; the attempts it then refuses are not
                log.warning("web sign-in throttled: too many wrong tokens", client=client, seconds=wait)
            raise Forbidden("wrong token", 401)

    def session_nonce(self, request: Request) -> str | None:
        """The signed-in session's nonce, or None."""
        if not self._key:
            return None
        return self.sessions.find(request.cookies.get(COOKIE, ""))

    def csrf_token(self, request: Request) -> str:
        nonce = self.session_nonce(request)
        return self.sessions.mac("csrf", nonce) if nonce else ""

    def signed_in(self, request: Request) -> bool:
        return self.session_nonce(request) is not None

    def who(self, request: Request) -> str:
        """Who acts, for the event log: the signed-in session (its nonce's first characters tell one
        session from another and are no use for forging its cookie), or an API client with the
        token; and from which address."""
        client = request.client.host if request.client else "?"
        if _bearer(request) is not None:
            return f"web API token from {client}"
        nonce = self.session_nonce(request)
        return f"web session {nonce[:8]} from {client}" if nonce else f"web from {client}"

    def admit_write(self, request: Request, what: str) -> None:
        """Raise Forbidden unless this request may do `what` (submit, retry), judged on its headers alone:
        called before the body is read, so a client without the token cannot hold a connection open by
        sending a body slowly. `check_form` then checks the form's CSRF token."""
        if not self.writes.get(what):
            raise Forbidden(f"this dashboard is read-only for {what} (web_allow_{what} is off)")
        token = _bearer(request)
        if token is not None:
            self._check_token(token, request.client.host if request.client else "?")
            return
        check_same_origin(request)
        if self.session_nonce(request) is None:
            raise Forbidden("sign in with the token first", 401)

    def check_form(self, request: Request, form: Any) -> None:
        """The CSRF token of a cookie-borne write (admitted by `admit_write`); API clients have none."""
        nonce = self.session_nonce(request)
        if _bearer(request) is not None or nonce is None:
            return
        offered = request.headers.get("x-csrf-token") or (form.get("csrf") if form is not None else None)
        if not isinstance(offered, str) or not hmac.compare_digest(offered, self.sessions.mac("csrf", nonce)):
            raise Forbidden("the form has expired or did not come from this dashboard (CSRF): reload the "
                            "page and try again")


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def check_same_origin(request: Request) -> None:
    """A browser says where a request comes from; one from another site is refused."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("cross-site request refused")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise Forbidden("cross-origin request refused")
    elif origin == "null":
        raise Forbidden("request from an opaque origin refused")


class BodyLimit:
    """Refuse a request body over the cap with 413, whether it says its length or streams it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _too_large(send, self.max_bytes)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class BodyTooLarge(Exception):
    """Raised from the body stream into the handler, and answered by BodyLimit with 413."""


async def _too_large(send: Send, limit: int) -> None:
    body = f"request too large: at most {limit // (1024 * 1024)} MiB (web_upload_max_mb)".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; "
                               "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
