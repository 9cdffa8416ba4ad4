"""The dashboard's HTTP server: uvicorn, with the limits that keep one client from taking it over.

uvicorn closes an idle keep-alive connection, but it never times out a request whose headers do not
arrive: a few hundred sockets that send half a request line held every descriptor and kept /healthz
from answering. So each connection gets a deadline for a complete request head (from the moment it is
accepted, and again after each response), and the number of open connections is capped: at the cap a
new connection displaces the oldest one that is still waiting for its request head (a slow client, or an
idle keep-alive one, which a browser simply opens again), and is refused with a 503 only when every open
connection has a request in flight. A request head is at most h11's 16 KiB.

What this does not do is what a reverse proxy is for (docs/web.md): TLS, sign-in for people, per-client
limits, and timeouts on slow request bodies (an upload is capped in size by web_upload_max_mb).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from i2v_watcher.config.settings import Settings, host_and_port
from i2v_watcher.errors import StartupError

TICK_S = 1.0  # how often the idle server wakes: the Date header's resolution is one second anyway
KEEP_ALIVE_S = 5  # an idle connection between requests: a browser reopens one without a sign
# Connections accepted in one go: asyncio accepts up to the listen backlog before the protocol sees
# any of them, and the ones they displace close a moment later, so in a flood the count of sockets
# briefly goes up to two backlogs past the cap (measured: 491 for a cap of 256 and 1,100 clients).
BACKLOG = 128
SPARE_DESCRIPTORS = 2 * BACKLOG + 128  # that burst, and served files, thumbnails, folders, the log
_BUSY_TEXT = b"too many open connections\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT))


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head and a connection cap."""

    header_timeout_s: float = 10.0
    max_connections: int = 256
    _deadline: asyncio.TimerHandle | None = None
    _since = 0.0  # when it began to wait for a request head (loop time)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        if len(self.connections) > self.max_connections and not self._displace_one():
            transport.write(BUSY)
            transport.close()
            return
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._since = self.loop.time()
        self._arm()  # the next request on this connection has as long for its head

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def waiting_for_head(self) -> bool:
        return not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self.waiting_for_head():  # a request in flight is never cut off by this deadline
            self.transport.close()

    def _displace_one(self) -> bool:
        """Close the connection that has waited longest for a request head; False when none is waiting."""
        waiting = [c for c in self.connections
                   if c is not self and isinstance(c, GuardedH11) and c.waiting_for_head()]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._since).transport.close()
        return True


def protocol_for(settings: Settings) -> type[GuardedH11]:
    """GuardedH11 with this config's limits (uvicorn makes one protocol object per connection)."""
    return type("DashboardHTTP", (GuardedH11,), {"header_timeout_s": settings.web_header_timeout_s,
                                                  "max_connections": settings.web_max_connections})


def ensure_descriptors(settings: Settings) -> None:
    """Raise the soft limit of open files to what web_max_connections needs (up to the hard limit), or
    refuse to start: past it every accept, file and thumbnail would fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = settings.web_max_connections + SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise StartupError(f"web_max_connections = {settings.web_max_connections} needs {needed} open "
                               f"files, over this process's limit of {hard} (LimitNOFILE= in the unit, or "
                               "ulimit -n): lower web_max_connections or raise the limit")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    host, port = host_and_port(settings.web_listen)
    # ws="none": no page uses a websocket, so no upgrade can take a connection out of these limits.
    return uvicorn.Config(app, host=host, port=port, http=protocol_for(settings), ws="none",
                          log_config=None, access_log=False, server_header=False, proxy_headers=False,
                          timeout_keep_alive=KEEP_ALIVE_S, backlog=BACKLOG)


class QuietServer(uvicorn.Server):
    """uvicorn's server, woken once a second instead of ten times: its 0.1 s tick alone cost an idle
    dashboard 0.27 % of a core (0.04 % at one second, against a budget of 1 % for the whole idle
    dashboard). A stop signal wakes it at once, so it stops no later than before."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._wake, self._loop = asyncio.Event(), asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick renews the Date header when counter % 10 == 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:  # a signal handler: through the loop's pipe
            with contextlib.suppress(RuntimeError):  # the loop closed already: nothing left to wake
                self._loop.call_soon_threadsafe(self._wake.set)
