"""Which names the dashboard answers to (DNS rebinding).

A web page on evil.example can make its own name resolve to 127.0.0.1 a moment after it loaded
("rebinding"): the browser then sends the page's requests to the dashboard, and, the name being the
page's own, lets the page read the answers. The one thing such a request cannot hide is the name in
its Host header, so every request whose Host is not a configured name is refused before any route
runs. An address written as a number cannot be rebound (no DNS is involved), which is why a
dashboard on a wildcard address may accept any of them by default.

Starlette's TrustedHostMiddleware is not used: it compares names only, never the port, and cuts an
IPv6 Host (`[::1]:8080`) at its first colon.
"""

from __future__ import annotations

import ipaddress
import socket

from starlette.types import ASGIApp, Receive, Scope, Send

from i2v_watcher.config.checks import host_name_and_port
from i2v_watcher.config.settings import Settings, host_and_port
from i2v_watcher.ops.reading import printable

LOOPBACK = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::")


class AllowedHosts:
    """web_allowed_hosts, or by default web_listen's host and localhost on web_listen's port."""

    def __init__(self, settings: Settings) -> None:
        listen_host, self.port = host_and_port(settings.web_listen)
        listen_host = listen_host.lower()
        entries = [host_name_and_port(entry) for entry in settings.web_allowed_hosts]
        # A wildcard listen address: the dashboard is reached by this host's name or any address.
        self.any_address = not entries and listen_host in WILDCARDS
        if not entries:
            names = [listen_host, *LOOPBACK]
            if self.any_address:
                names += [socket.gethostname().lower(), socket.getfqdn().lower()]
            entries = [(name, self.port) for name in names if name not in WILDCARDS]
        self.any_port = {name for name, port in entries if port is None}
        self.exact = {(name, port) for name, port in entries if port is not None}

    def allows(self, header: str) -> bool:
        try:
            name, port = host_name_and_port(header)
        except ValueError:
            return False
        if name in self.any_port or (name, port) in self.exact:
            return True
        return self.any_address and port == self.port and _is_address(name)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """Refuse (400, plain text) every request whose Host header is not an allowed name."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the dashboard has no websocket route
            await self.app(scope, receive, send)
            return
        header = next((value.decode("latin-1") for name, value in scope.get("headers", [])
                       if name == b"host"), "")
        if self.hosts.allows(header):
            await self.app(scope, receive, send)
            return
        body = (f"this dashboard does not answer to the host name {printable(header)[:200]!r}: if that "
                "is its name, add it to web_allowed_hosts\n").encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
