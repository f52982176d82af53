"""A minimal HTTP/1.1 listener for ``/metrics``, ``/healthz``, ``/readyz`` and the dashboard.

Theory of operation
-------------------
One request per connection, then ``Connection: close``: a scraper or a
healthcheck asks one thing every few seconds, so keep-alive buys nothing and
costs a state machine. :func:`parse_request` is sans-IO (the head's bytes in,
``(method, path)`` or an error :class:`Answer` out; :func:`parse_head` adds the
query and the header fields); :class:`_HttpProtocol` buffers up to
:data:`MAX_HEAD` bytes of head and :data:`MAX_BODY` of body (``Content-Length``
only; ``Transfer-Encoding`` is ``501``) for :data:`TIMEOUT` seconds, parses,
runs the route's coroutine with the :class:`Request` and writes the answer. It
runs on the server's own event loop (no thread). A route answers ``GET`` and
``HEAD`` (RFC 9110 §9.1: a general-purpose server supports both) unless it is
declared a ``POST`` route (:func:`post`, the dashboard's actions); any other
method is ``405`` with ``Allow``, an unknown path ``404``, a malformed head
``400``, an oversized one ``431``, a body over the limit ``413``, a request not
complete in time ``408``. A route that raises is a bug: ``500``, logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from buzon.net import bind_sockets, format_address

__all__ = [
    "MAX_BODY", "MAX_HEAD", "TEXT", "TIMEOUT", "Answer", "HttpListener", "Request", "Route",
    "parse_head", "parse_request", "post", "start_http", "text",
]

log = logging.getLogger("buzon.observe")

MAX_HEAD = 8192  # bytes of request line and headers
MAX_BODY = 4096  # bytes of a request body (the dashboard's small JSON posts)
TIMEOUT = 5.0  # seconds from connect to the end of the head

_REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 409: "Conflict", 413: "Content Too Large",
            415: "Unsupported Media Type", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}
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


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request, as a route sees it."""

    method: str
    path: str
    query: str = ""
    """What followed ``?`` in the target, undecoded."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Header fields by lower-case name (a repeated one: the last)."""
    body: bytes = b""
    peer: str = ""
    """The client's address (no port)."""


Route = Callable[[Request], Awaitable[Answer]]


def post(route: Route) -> Route:
    """Declare ``route`` a ``POST`` route (it answers nothing else)."""
    route.methods = ("POST",)  # type: ignore[attr-defined]
    return route


def _methods(route: Route) -> tuple[str, ...]:
    return getattr(route, "methods", ("GET", "HEAD"))


def parse_head(head: bytes) -> Request | Answer:
    """The :class:`Request` (without body) of a head up to the blank line, or the error answer."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return text(400, "bad request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
        fields = rest.decode("latin-1").split("\r\n") if rest else []
    except UnicodeDecodeError:
        return text(400, "bad request line")
    headers: dict[str, str] = {}
    for item in fields:
        name, colon, value = item.partition(":")
        if not colon or not name or name != name.strip():
            return text(400, "bad header field")
        headers[name.lower()] = value.strip(" \t")
    path, _, query = target.partition("?")
    return Request(method, path, query, headers)


def parse_request(head: bytes) -> tuple[str, str] | Answer:
    """``(method, path)`` from a request head (up to the blank line), or the error answer."""
    got = parse_head(head)
    return got if isinstance(got, Answer) else (got.method, got.path)


def answer_for(method: str, path: str, routes: Mapping[str, Route]) -> Route | Answer:
    """The route to run, or the ``404``/``405`` answer."""
    route = routes.get(path)
    if route is None:
        return text(404, f"no such path: {path} (try /metrics, /healthz, /readyz)")
    allowed = _methods(route)
    if method not in allowed:
        return Answer(405, f"only {' and '.join(allowed)}\n".encode(),
                      headers=(("Allow", ", ".join(allowed)),))
    return route


def body_length(request: Request) -> int | Answer:
    """How many body bytes follow the head, or the error answer."""
    if "transfer-encoding" in request.headers:
        return text(501, "Transfer-Encoding is not supported; send Content-Length")
    raw = request.headers.get("content-length", "0")
    if not raw.isdigit():
        return text(400, "bad Content-Length")
    if int(raw) > MAX_BODY:
        return text(413, f"request body over {MAX_BODY} bytes")
    return int(raw)


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
        if len(self._buf) > MAX_HEAD + 4 + MAX_BODY:
            self._send(text(413, f"request over {MAX_HEAD} bytes of head and {MAX_BODY} of body"))
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._send(text(431, f"request head over {MAX_HEAD} bytes"))
            return
        if end > MAX_HEAD:
            self._send(text(431, f"request head over {MAX_HEAD} bytes"))
            return
        parsed = parse_head(bytes(self._buf[:end]))
        if isinstance(parsed, Answer):
            self._send(parsed)
            return
        chosen = answer_for(parsed.method, parsed.path, self._routes)
        if isinstance(chosen, Answer):
            self._send(chosen)
            return
        length = body_length(parsed)
        if isinstance(length, Answer):
            self._send(length)
            return
        if len(self._buf) < end + 4 + length:
            return  # the rest of the body is on its way (or the timer answers 408)
        peer = self._transport.get_extra_info("peername") if self._transport else None
        request = Request(parsed.method, parsed.path, parsed.query, parsed.headers,
                          bytes(self._buf[end + 4:end + 4 + length]),
                          str(peer[0]) if peer else "")
        self._done = True
        task = asyncio.get_running_loop().create_task(self._run(chosen, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, route: Route, request: Request) -> None:
        try:
            answer = await route(request)
        except Exception:
            log.exception("HTTP route failed")
            answer = text(500, "internal error (logged)")
        self._send(answer, request.method == "HEAD")

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


async def start_http(hosts: tuple[str, ...], port: int, routes: Mapping[str, Route],
                     background: Sequence[Coroutine[Any, Any, None]] = ()) -> HttpListener:
    """Bind ``hosts``:``port`` (:func:`buzon.net.bind_sockets`) and serve ``routes``.

    ``background`` coroutines (the dashboard's sampler) run until :meth:`HttpListener.close`.

    Raises:
        OSError: an address cannot be bound (the policy of :mod:`buzon.net`).
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    try:
        sockets = bind_sockets(hosts, port)
    except BaseException:
        for job in background:
            job.close()  # never started: no "never awaited" warning
        raise
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
        for job in background:
            job.close()
        raise
    for job in background:
        tasks.add(loop.create_task(job))  # cancelled by close() with the answers
    addresses = [sock.getsockname()[:2] for sock in sockets]
    log.debug("HTTP on %s", ", ".join(format_address(h, p) for h, p in addresses))
    return HttpListener(servers, addresses, tasks)
