"""Sign-in sessions, and the brake on guessing the token.

A session is a random nonce in the cookie, signed with a key that this process derives from the token
and a random salt when it starts, and listed in a table here with the moment it expires. It is valid
while the signature fits, its entry is in the table and it has not expired: so
- it expires after web_session_s (measured on this process's monotonic clock: a cookie never reaches
  another process, so no wall clock, and no other host's, is ever compared);
- signing out removes its entry: the same cookie, replayed, is refused at once;
- a restart of the web process draws a new salt, so every cookie issued before is refused. That is
  why nothing is written to disk: the dashboard's unit keeps no state (its only writable folders are
  the team's share, no place for a secret), and a table that dies with the process takes with it only
  sessions that its successor cannot verify anyway. The cost: a restart signs everyone out.

The table is bounded (MAX_SESSIONS, the oldest dropped first): only a holder of the token can add to
it. Failed sign-ins are bounded per client address and in all (SigninThrottle): a wrong token in the
form or in an `Authorization` header counts the same.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

MAX_SESSIONS = 1000
WINDOW_S = 60.0
OVERALL = 10  # the dashboard in all allows this many times a client's failures

Clock = Callable[[], float]


class Sessions:
    def __init__(self, token: bytes, lifetime_s: float, clock: Clock = time.monotonic) -> None:
        self._key = hmac.new(token, b"i2v-session:" + secrets.token_bytes(32), hashlib.sha256).digest()
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._expires: dict[str, float] = {}  # nonce -> when it expires, oldest first
        self._lock = threading.Lock()

    def mac(self, purpose: str, nonce: str) -> str:
        return hmac.new(self._key, f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()

    def open(self) -> str:
        """A new session: the cookie's value."""
        nonce = secrets.token_hex(16)
        with self._lock:
            self._forget_expired()
            while len(self._expires) >= MAX_SESSIONS:
                del self._expires[next(iter(self._expires))]
            self._expires[nonce] = self._clock() + self.lifetime_s
        return f"{nonce}.{self.mac('session', nonce)}"

    def find(self, cookie: str) -> str | None:
        """The nonce of the open, unexpired session this cookie names, or None."""
        nonce, _, mac = cookie.partition(".")
        if not nonce or not hmac.compare_digest(mac, self.mac("session", nonce)):
            return None  # not ours (or of a process before a restart): the table is never consulted
        with self._lock:
            expires = self._expires.get(nonce)
            if expires is None:
                return None
            if self._clock() >= expires:
                del self._expires[nonce]
                return None
        return nonce

    def close(self, cookie: str) -> None:
        nonce = self.find(cookie)
        if nonce is not None:
            with self._lock:
                self._expires.pop(nonce, None)

    def _forget_expired(self) -> None:
        now = self._clock()
        for nonce in [n for n, expires in self._expires.items() if expires <= now]:
            del self._expires[nonce]


class SigninThrottle:
    """At most `per_client` failed sign-ins per client address in WINDOW_S, and OVERALL times that from
    all clients together; then every attempt (even with the right token) waits."""

    def __init__(self, per_client: int, clock: Clock = time.monotonic) -> None:
        self.per_client = per_client
        self.overall = per_client * OVERALL
        self._clock = clock
        self._clients: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> int:
        """Whole seconds until `client` may try again; 0: now."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            waits = [_until_free(self._all, self.overall, now),
                     _until_free(self._clients.get(client, deque()), self.per_client, now)]
            return max(waits)

    def failed(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            self._all.append(now)
            self._clients.setdefault(client, deque()).append(now)

    def _expire(self, now: float) -> None:
        # Failures are recorded only while attempts are allowed, so at most `overall` per window: the
        # table of clients stays that small.
        for times in (self._all, *self._clients.values()):
            while times and times[0] <= now - WINDOW_S:
                times.popleft()
        for client in [c for c, times in self._clients.items() if not times]:
            del self._clients[client]


def _until_free(times: deque[float], limit: int, now: float) -> int:
    if len(times) < limit:
        return 0
    return max(1, math.ceil(times[-limit] + WINDOW_S - now))
