"""A minimal HTTP/1.1 listener for ``/metrics``, ``/healthz`` and ``/readyz``.

Theory of operation
-------------------
One request per connection, then ``Connection: close``: a scraper or a
healthcheck asks one thing every few seconds, so keep-alive buys nothing and
costs a state machine. :func:`parse_request` is sans-IO (the head's bytes in,
``(method, path)`` or an error :class:`Answer` out); :class:`_HttpProtocol`
buffers up to :data:`MAX_HEAD` bytes for :data:`TIMEOUT` seconds, parses, runs
the route's coroutine and writes the answer. It runs on the server's own event
loop (no thread). Only ``GET`` and ``HEAD`` (RFC 9110 §9.1: a general-purpose
server supports both); any other method is ``405`` with ``Allow``, an unknown
path ``404``, a malformed head ``400``, an oversized one ``431``, a head not
complete in time ``408``. A route that raises is a bug: ``500``, logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from buzon.net import bind_sockets, format_address

__all__ = [
    "MAX_HEAD", "TEXT", "TIMEOUT", "Answer", "HttpListener", "Route", "parse_request", "start_http",
    "text",
]

log = logging.getLogger("buzon.observe")

MAX_HEAD = 8192  # bytes of request line and headers
TIMEOUT = 5.0  # seconds from connect to the end of the head

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP response."""

    status: int
    """The status code; its reason phrase comes from the module's table."""
    body: bytes = b""
    """The body, sent with ``Content-Length`` (not for ``HEAD``)."""
    content_type: str = TEXT
    """Its ``Content-Type``."""
    headers: tuple[tuple[str, str], ...] = field(default=())
    """Extra header lines."""

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}",
                 "Cache-Control: no-store",
                 "Connection: close",
                 *(f"{name}: {value}" for name, value in self.headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head if head_only else head + self.body


def text(status: int, line: str) -> Answer:
    """A one-line plain-text answer."""
    return Answer(status, line.encode() + b"\n")


Route = Callable[[], Awaitable[Answer]]


def parse_request(head: bytes) -> tuple[str, str] | Answer:
    """``(method, path)`` from a request head (up to the blank line), or the error answer.

    The query string is dropped; header lines are not read (none changes the answer).
    """
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return text(400, "bad request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return text(400, "bad request line")
    return method, target.split("?", 1)[0]


def answer_for(method: str, path: str, routes: Mapping[str, Route]) -> Route | Answer:
    """The route to run, or the ``404``/``405`` answer."""
    route = routes.get(path)
    if route is None:
        return text(404, f"no such path: {path} (try /metrics, /healthz, /readyz)")
    if method not in ("GET", "HEAD"):
        return Answer(405, b"only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
    return route


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, routes: Mapping[str, Route], tasks: set[asyncio.Task[None]]) -> None:
        self._routes = routes
        self._tasks = tasks
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._timer = asyncio.get_running_loop().call_later(TIMEOUT, self._late)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _late(self) -> None:
        if not self._done:
            self._send(text(408, "request not complete in time"))

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._send(text(431, f"request head over {MAX_HEAD} bytes"))
            return
        if end > MAX_HEAD:
            self._send(text(431, f"request head over {MAX_HEAD} bytes"))
            return
        parsed = parse_request(bytes(self._buf[:end]))
        if isinstance(parsed, Answer):
            self._send(parsed)
            return
        method, path = parsed
        chosen = answer_for(method, path, self._routes)
        if isinstance(chosen, Answer):
            self._send(chosen)
            return
        self._done = True
        task = asyncio.get_running_loop().create_task(self._run(chosen, method == "HEAD"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, route: Route, head_only: bool) -> None:
        try:
            answer = await route()
        except Exception:
            log.exception("HTTP route failed")
            answer = text(500, "internal error (logged)")
        self._send(answer, head_only)

    def _send(self, answer: Answer, head_only: bool = False) -> None:
        self._done = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer.encode(head_only))
            self._transport.close()


class HttpListener:
    """The bound listener: its addresses, and :meth:`close`."""

    def __init__(self, servers: list[Any], addresses: list[tuple[str, int]],
                 tasks: set[asyncio.Task[None]]) -> None:
        self.servers = servers
        self.addresses = addresses
        self._tasks = tasks

    async def close(self) -> None:
        """Stop accepting; answers being computed are cancelled."""
        for server in self.servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def start_http(hosts: tuple[str, ...], port: int,
                     routes: Mapping[str, Route]) -> HttpListener:
    """Bind ``hosts``:``port`` (:func:`buzon.net.bind_sockets`) and serve ``routes``.

    Raises:
        OSError: an address cannot be bound (the policy of :mod:`buzon.net`).
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    sockets = bind_sockets(hosts, port)
    servers: list[Any] = []
    try:
        for sock in sockets:
            servers.append(await loop.create_server(
                lambda: _HttpProtocol(routes, tasks), sock=sock, backlog=128))
    except BaseException:
        for server in servers:
            server.close()
        for sock in sockets[len(servers):]:
            sock.close()
        raise
    addresses = [sock.getsockname()[:2] for sock in sockets]
    log.debug("HTTP on %s", ", ".join(format_address(h, p) for h, p in addresses))
    return HttpListener(servers, addresses, tasks)
