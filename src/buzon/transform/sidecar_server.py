"""The sidecar server: answers the handoff requests and runs the program on spool files.

Theory of operation
-------------------
A sidecar container shares the work area (transform files only) with ``smtp``
and runs one program (``tac``, ``spamc``, yours) on messages the server names
over TCP, using the protocol in :mod:`buzon.transform.wire` (documented in
docs/protocol.md): one connection, one sealed JSON line each way. :class:`Sidecar` is that server;
``buzon-sidecar`` (:mod:`buzon.transform.sidecar`) builds its settings, starts
it and stops it.

Every request is first authenticated (:mod:`buzon.transform.auth`): its seal
must verify with the deployment key, else the answer is an unsealed ``auth``
error and nothing else is looked at; then its timestamp must be within
``--max-skew`` seconds and its nonce new (``auth`` again: a replay). Every
answer to an authenticated request is sealed, bound to its nonce.

For a ``transform`` request the sidecar then

1. checks that the two names are the input and output of one job
   (:func:`~buzon.transform.paths.check_job`) and confines them to ``--root``
   (:func:`~buzon.transform.paths.confine`), answering ``path`` for anything
   else, a missing input or output directory, or an output that already
   exists: a sidecar creates its output and never replaces a file;
2. admits the request: at most ``--concurrency`` run at once, up to ``--queue``
   more wait for a slot; beyond that, or while the same output is already being
   written, the answer is ``busy`` at once (the server retries later);
3. runs the program with :func:`~buzon.transform.command.run_command`: stdin is
   the input file, stdout goes to a new ``output.tmp`` (capped at
   ``--max-output``), flushed and linked to ``output`` (which fails if one
   appeared meanwhile); the program's process group is killed on
   timeout or oversize;
4. answers ``ok`` with the size and the milliseconds spent, or the error kind:
   ``timeout``, ``exit`` and ``oversize`` as the program run gave them, and
   ``internal`` for any kind the wire does not carry (``spawn``: the program
   vanished after the start-up check, the sidecar's own problem).

A request line that does not decode is answered ``bad-request``; a bug while
answering one request is logged and answered ``internal``, and the sidecar
keeps serving (aiosmtpd's ``handle_exception``). Each request is logged as one
line with its duration (health requests at DEBUG, since Docker sends one every
few seconds). Shutdown, as uvicorn's ``Server`` does it: close the listeners,
let requests in flight finish for ``--grace`` seconds, cancel (and so kill)
what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from pathlib import Path

from buzon.net import bind_sockets, format_peer, parse_listen
from buzon.transform.auth import REQUEST_CONTEXT, ReplayGuard, reply_context, seal, unseal
from buzon.transform.command import run_command
from buzon.transform.failures import FailureKind, TransformError
from buzon.transform.paths import check_job, confine
from buzon.transform.sidecar_settings import SidecarSettings
from buzon.transform.wire import (
    MAX_LINE,
    ErrorReply,
    HealthOk,
    HealthRequest,
    PathRefused,
    ProtocolError,
    Request,
    Response,
    TransformOk,
    TransformRequest,
    decode_request,
    encode_response,
)

__all__ = ["Sidecar"]

log = logging.getLogger("buzon.sidecar")

_READ_TIMEOUT = 10.0  # seconds a client gets to send its request line
_HEALTH_COMMAND_CHARS = 1024  # the command shown by health, so the reply fits a line


class Sidecar:
    """Listeners, admission control and the requests in flight."""

    def __init__(self, settings: SidecarSettings, command: list[str], key: bytes) -> None:
        self.settings = settings
        self._key = key
        self._replays = ReplayGuard(settings.max_skew)
        self.command = list(command)
        self.running = 0
        self.queued = 0
        self.addresses: list[tuple[str, int]] = []
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._outputs: set[Path] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on every configured address.

        Raises:
            OSError: an address cannot be bound (the policy of :mod:`buzon.net`).
        """
        for sock in bind_sockets(parse_listen(self.settings.listen), self.settings.port):
            server = await asyncio.start_server(self._connection, sock=sock, limit=MAX_LINE)
            self._servers.append(server)
            self.addresses.append(sock.getsockname()[:2])

    async def shutdown(self) -> None:
        """Stop accepting, let requests finish for ``grace`` s, cancel the rest."""
        for server in self._servers:
            server.close()
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.settings.grace)
        if pending:
            log.warning("cancelling %d request(s) still running after %g s",
                        len(pending), self.settings.grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    @property
    def in_flight(self) -> int:
        """Requests being answered now (running, queued or being read)."""
        return len(self._tasks)

    # -- requests --------------------------------------------------------------------
    async def answer(self, line: bytes) -> tuple[Request | None, Response, bytes]:
        """Authenticate, decode and answer one request line (no socket involved).

        Returns:
            The request (None when it did not authenticate or decode), the
            response, and its line, sealed when the request authenticated.
        """
        try:
            unseal(self._key, REQUEST_CONTEXT, line)
        except ProtocolError as error:  # not ours: say so, unsealed, and touch nothing
            response: Response = ErrorReply(error.kind, str(error))
            return None, response, encode_response(response)
        try:
            request, stamp = decode_request(line)
            self._replays.check(stamp.ts, stamp.nonce, time.time())
        except ProtocolError as error:
            response, nonce = ErrorReply(error.kind, str(error)), _nonce_of(line)
            reply = encode_response(response)
            return None, response, (seal(self._key, reply_context(nonce), reply) if nonce
                                    else reply)
        response = await self.handle(request)
        reply = encode_response(response)
        return request, response, seal(self._key, reply_context(stamp.nonce), reply)

    async def handle(self, request: Request) -> Response:
        """Answer one authenticated, decoded request."""
        if isinstance(request, HealthRequest):
            return HealthOk(self._shown_command(), self.running, self.settings.concurrency,
                            self.queued)
        return await self._transform(request)

    def _shown_command(self) -> tuple[str, ...]:
        shown: list[str] = []
        for arg in self.command:
            if len(json.dumps(shown + [arg])) > _HEALTH_COMMAND_CHARS:
                return (*shown, "...")
            shown.append(arg)
        return tuple(shown)

    async def _transform(self, request: TransformRequest) -> Response:
        start = time.perf_counter()
        try:
            check_job(request.input, request.output)
            src = confine(self.settings.root, request.input)
            dst = confine(self.settings.root, request.output)
        except PathRefused as error:
            return ErrorReply(FailureKind.PATH, str(error))
        if src == dst:
            return ErrorReply(FailureKind.PATH, "input and output are the same file")
        if os.path.lexists(dst):
            return ErrorReply(FailureKind.PATH, f"{request.output!r} exists; a sidecar never "
                                                "replaces a file")
        try:
            if not stat.S_ISREG(os.stat(src).st_mode):
                return ErrorReply(FailureKind.PATH, f"{request.input!r} is not a regular file")
        except FileNotFoundError:
            return ErrorReply(FailureKind.PATH, f"no file {request.input!r} in the work area "
                                                "(is the volume shared and mounted there?)")
        if not dst.parent.is_dir():
            return ErrorReply(FailureKind.PATH, f"no directory for {request.output!r}")
        if dst in self._outputs:
            # A retry while the first attempt still runs: both would write output.tmp.
            return ErrorReply(FailureKind.BUSY, f"already writing {request.output!r}")
        if self.running + self.queued >= self.settings.concurrency + self.settings.queue:
            return ErrorReply(FailureKind.BUSY, f"{self.running} running and {self.queued} queued")
        self._outputs.add(dst)
        try:
            self.queued += 1
            try:
                await self._slots.acquire()
            finally:
                self.queued -= 1
            self.running += 1
            try:
                size = await run_command(
                    self.command, src, dst, timeout=self.settings.timeout,
                    max_output=self.settings.max_output, fsync=self.settings.fsync,
                    exclusive=True,
                )
            finally:
                self.running -= 1
                self._slots.release()
        except TransformError as error:
            # timeout, exit and oversize travel as run_command gave them; a kind the
            # wire does not carry (spawn: the program vanished) is our own problem.
            kind = error.kind if error.kind.on_wire else FailureKind.INTERNAL
            return ErrorReply(kind, error.detail)
        finally:
            self._outputs.discard(dst)
        return TransformOk(size, (time.perf_counter() - start) * 1000)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = _peer(writer)
        start = time.perf_counter()
        request: Request | None = None
        try:
            response: Response | None = None
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), _READ_TIMEOUT)
            except asyncio.IncompleteReadError as error:
                if not error.partial:
                    return  # connected and left: a port probe, nothing to answer
                response = ErrorReply(FailureKind.BAD_REQUEST,
                                      "request line not terminated by a newline")
            except asyncio.LimitOverrunError:
                response = ErrorReply(FailureKind.BAD_REQUEST,
                                      f"line longer than {MAX_LINE} bytes")
            except TimeoutError:
                response = ErrorReply(FailureKind.BAD_REQUEST,
                                      f"no request within {_READ_TIMEOUT:g} s")
            if response is None:
                request, response, answer = await self.answer(line)
            else:
                answer = encode_response(response)
            writer.write(answer)
            await writer.drain()
        except ConnectionError as error:
            log.info("%s: connection lost: %s", peer, error)
            return
        except Exception:
            # A bug in one request must not take the sidecar down (aiosmtpd's
            # handle_exception): answer "internal" and keep serving.
            log.exception("%s: unexpected error", peer)
            response = ErrorReply(FailureKind.INTERNAL,
                                  "unexpected error; see the sidecar's log")
            request = None
            with contextlib.suppress(ConnectionError):
                writer.write(encode_response(response))
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)
        _log_request(peer, request, response, (time.perf_counter() - start) * 1000)


def _peer(writer: asyncio.StreamWriter) -> str:
    return format_peer(writer.get_extra_info("peername"))


def _nonce_of(line: bytes) -> str | None:
    """The nonce of an authenticated line that did not decode whole, if it has one."""
    with contextlib.suppress(ValueError, AttributeError):
        nonce = json.loads(line).get("nonce")
        if isinstance(nonce, str) and nonce.isascii() and nonce.isprintable():
            return nonce
    return None


def _printable(text: str) -> str:
    """Control characters escaped, so a name cannot forge or hide a log line."""
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in text)


def _log_request(peer: str, request: Request | None, response: Response, ms: float) -> None:
    if isinstance(request, HealthRequest):
        log.debug("%s health ok %.1f ms", peer, ms)
        return
    what = (f"transform {_printable(request.input)} -> {_printable(request.output)}"
            if isinstance(request, TransformRequest) else "bad request")
    if isinstance(response, TransformOk):
        log.info("%s %s ok %d bytes %.1f ms", peer, what, response.size, ms)
    elif isinstance(response, ErrorReply):
        log.info("%s %s error %s %.1f ms: %s", peer, what, response.kind, ms, response.detail)

