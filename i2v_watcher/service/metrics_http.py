"""The HTTP server behind `metrics_port`: prometheus_client's WSGI app on a wsgiref server that no client
can use to take the daemon down.

prometheus_client's own start_http_server starts one thread per connection, with no bound and no
timeout: 300 connections that sent nothing held 300 descriptors and threads for ever, and the daemon
died of EMFILE elsewhere (in its recovery). Here the cost of any number of clients is bounded:

- at most MAX_CONNECTIONS connections are served at once; one more is closed as soon as it is accepted,
  unread (its descriptor lives for microseconds; the kernel's backlog holds the rest, at no cost to
  this process);
- every connection is closed DEADLINE_S after it was accepted, whatever it sent or did not send (an
  idle client, one that trickles its headers, one that does not read the answer);
- one request per connection (wsgiref speaks HTTP/1.0), its request line and headers bounded by
  http.server (64 KiB each, 100 headers);
- nothing a connection does raises out of the serving thread, or writes a traceback: a failed
  connection is logged at debug level; while the process is out of descriptors, accept is tried
  every STARVED_PAUSE_S instead of in a busy loop.

A scrape takes milliseconds; Prometheus scrapes each target once per interval, so a few slots are
plenty, and a flood costs the metrics (not served until it stops), never the daemon's jobs.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

MAX_CONNECTIONS = 8  # served at once; more are closed at once
DEADLINE_S = 5.0  # from accept to close, whatever the client does
BACKLOG = 64  # connections the kernel queues before accept (they hold no descriptor of ours)
STARVED_PAUSE_S = 0.1  # between accepts while the process is out of descriptors
log = structlog.get_logger("i2v_watcher.service.metrics")


class QuietHandler(WSGIRequestHandler):
    """One request, every socket operation bounded by the server's deadline, no access log on stderr
    (the daemon's log is structured; a scrape every 15 s is not news)."""

    server: BoundedWSGIServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.deadline_s)  # each read and write, at most that long

    def log_message(self, format: str, *args: Any) -> None:
        return None


class BoundedWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most `limit` connections, each closed `deadline_s` after its accept
    (checked by the serving thread at every turn of serve_forever, at least every poll interval)."""

    daemon_threads = True  # a stop never waits for a client
    request_queue_size = BACKLOG

    def __init__(self, address: str, port: int, limit: int = MAX_CONNECTIONS,
                 deadline_s: float = DEADLINE_S) -> None:
        # IPv4 or IPv6 by what the address is (as prometheus_client's own server chooses).
        family, _, _, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        self.address_family = family
        self.limit = limit
        self.deadline_s = deadline_s
        self._open: dict[socket.socket, float] = {}  # served connections -> when they are closed
        self._lock = threading.Lock()
        super().__init__((str(sockaddr[0]), port), QuietHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """accept(); out of descriptors (the daemon's, held by something else), a pause before the
        error: the connection stays pending, and serve_forever would otherwise spin on it."""
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(STARVED_PAUSE_S)
            raise

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = len(self._open) < self.limit
            if admitted:
                self._open[request] = time.monotonic() + self.deadline_s
        if not admitted:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except Exception as exc:  # no thread to be had (RuntimeError): drop the connection, not the daemon
            log.debug("metrics connection dropped", client=str(client_address), error=repr(exc))
            self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        """Forgotten before it is closed, under the lock that service_actions holds: a connection is
        never shut down after its descriptor was closed (and maybe reused)."""
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Past its deadline, a connection is shut down: its thread's next read or write ends at once,
        and the thread closes it."""
        now = time.monotonic()
        with self._lock:
            for connection, deadline in self._open.items():
                if deadline <= now:
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished, timed out or sent garbage: its problem, logged quietly (no traceback:
        a flood of them must cost little)."""
        log.debug("metrics connection failed", client=str(client_address), error=repr(sys.exc_info()[1]))


def start_server(address: str, port: int, registry: CollectorRegistry) -> tuple[BoundedWSGIServer,
                                                                                threading.Thread]:
    """Serving in a daemon thread; OSError when the address cannot be bound."""
    server = BoundedWSGIServer(address, port)
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=serve, args=(server,), name="metrics", daemon=True)
    thread.start()
    return server, thread


def serve(server: BoundedWSGIServer) -> None:
    """serve_forever, which nothing should end but a stop; if something does, the metrics stop and say
    so, and the daemon goes on with its jobs."""
    try:
        server.serve_forever()
    except Exception:
        log.error("the metrics server stopped", exc_info=True)
