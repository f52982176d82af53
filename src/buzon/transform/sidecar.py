"""The transform sidecar: ``buzon-sidecar [options] --root DIR -- COMMAND [ARGS...]``.

Theory of operation
-------------------
A sidecar container shares the mail volume with ``smtp`` and runs one program
(``tac``, ``spamc``, yours) on messages the server names over TCP, using the
protocol in :mod:`buzon.transform.protocol` (documented in docs/protocol.md):
one connection, one JSON line each way.

For a ``transform`` request the sidecar

1. confines both paths to ``--root`` (:func:`~buzon.transform.protocol.confine`),
   answering ``path`` for anything outside it, a missing input or output
   directory;
2. admits the request: at most ``--concurrency`` run at once, up to ``--queue``
   more wait for a slot; beyond that, or while the same output is already being
   written, the answer is ``busy`` at once (the server retries later);
3. runs the program with :func:`~buzon.transform.runner.run_command`: stdin is
   the input file, stdout goes to ``output.tmp`` (capped at ``--max-output``),
   flushed and renamed to ``output``; the program's process group is killed on
   timeout or oversize;
4. answers ``ok`` with the size and the milliseconds spent, or the error kind.

Each request is logged as one line with its duration (health requests at DEBUG,
since Docker sends one every few seconds). :class:`Sidecar` owns the lifecycle,
as uvicorn's ``Server`` does: SIGTERM or SIGINT only set an event; shutdown
closes the listeners, lets requests in flight finish for ``--grace`` seconds,
cancels (and so kills) what is left, and exits 0.

``buzon-sidecar --health HOST:PORT`` sends one health request and exits 0 when
it is answered, 1 otherwise: the Docker ``HEALTHCHECK``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from buzon import __version__
from buzon.config import exit_on_invalid, parse_listen
from buzon.transform.protocol import (
    MAX_LINE,
    ErrorKind,
    ErrorReply,
    HealthOk,
    HealthRequest,
    PathRefused,
    ProtocolError,
    Request,
    Response,
    TransformOk,
    TransformRequest,
    confine,
    decode_request,
    encode_response,
)
from buzon.transform.runner import TransformError, health, parse_address, run_command

__all__ = ["Sidecar", "SidecarSettings", "main"]

log = logging.getLogger("buzon.sidecar")

_READ_TIMEOUT = 10.0  # seconds a client gets to send its request line
_HEALTH_COMMAND_CHARS = 1024  # the command shown by health, so the reply fits a line
# run_command's kinds as the wire says them; "spawn" cannot happen after the start-up
# check unless the program vanished, which is the sidecar's own problem.
_WIRE_KIND = {
    "timeout": ErrorKind.TIMEOUT,
    "exit": ErrorKind.EXIT,
    "oversize": ErrorKind.OVERSIZE,
}


class SidecarSettings(BaseSettings):
    """Configuration of one ``buzon-sidecar`` process; flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="BUZON_SIDECAR_", extra="ignore")

    listen: str = Field(
        "0.0.0.0", description="Comma-separated addresses to listen on (flag --listen)."
    )
    port: int = Field(7000, ge=0, le=65535, description="TCP port (flag --port).")
    root: Path = Field(
        description="The spool root shared with smtp; no path outside it is touched (--root)."
    )
    timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds the program may take per message (--timeout)."
    )
    concurrency: int = Field(
        4, ge=1, le=1024, description="Programs run at once (--concurrency)."
    )
    queue: int = Field(
        32, ge=0, le=100_000,
        description="Requests that may wait for a free slot; past it the answer is busy (--queue).",
    )
    max_output: int = Field(
        20_480_000, ge=1, le=1 << 34,
        description="Largest output accepted, in bytes; the program is killed past it.",
    )
    grace: float = Field(
        8.0, ge=0, le=3600,
        description="Seconds requests in flight get to finish on SIGTERM (--grace).",
    )
    command: str | None = Field(
        None, description="The program line, shell-split, used when no `-- COMMAND` is given."
    )
    fsync: bool = Field(True, description="Flush each output to disk before renaming it.")
    log_level: str = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Log level on stderr."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class Sidecar:
    """Listeners, admission control and the requests in flight."""

    def __init__(self, settings: SidecarSettings, command: list[str]) -> None:
        self.settings = settings
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
            OSError: an address cannot be bound.
        """
        for host in parse_listen(self.settings.listen):
            server = await asyncio.start_server(
                self._connection, host, self.settings.port, limit=MAX_LINE
            )
            self._servers.append(server)
            self.addresses += [s.getsockname()[:2] for s in server.sockets]

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

    # -- requests --------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """Answer one decoded request (no socket involved)."""
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
            src = confine(self.settings.root, request.input)
            dst = confine(self.settings.root, request.output)
        except PathRefused as error:
            return ErrorReply(ErrorKind.PATH, str(error))
        if src == dst:
            return ErrorReply(ErrorKind.PATH, "input and output are the same file")
        try:
            if not stat.S_ISREG(os.stat(src).st_mode):
                return ErrorReply(ErrorKind.PATH, f"{request.input!r} is not a regular file")
        except FileNotFoundError:
            return ErrorReply(ErrorKind.PATH, f"no file {request.input!r} under the spool root "
                                              "(is the volume shared and mounted there?)")
        if not dst.parent.is_dir():
            return ErrorReply(ErrorKind.PATH, f"no directory for {request.output!r}")
        if dst in self._outputs:
            # A retry while the first attempt still runs: both would write output.tmp.
            return ErrorReply(ErrorKind.BUSY, f"already writing {request.output!r}")
        if self.running + self.queued >= self.settings.concurrency + self.settings.queue:
            return ErrorReply(ErrorKind.BUSY, f"{self.running} running and {self.queued} queued")
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
                )
            finally:
                self.running -= 1
                self._slots.release()
        except TransformError as error:
            return ErrorReply(_WIRE_KIND.get(error.kind, ErrorKind.INTERNAL), error.detail)
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
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), _READ_TIMEOUT)
                request = decode_request(line)
            except asyncio.IncompleteReadError as error:
                if not error.partial:
                    return  # connected and left: a port probe, nothing to answer
                response: Response = ErrorReply(ErrorKind.BAD_REQUEST,
                                                "request line not terminated by a newline")
            except asyncio.LimitOverrunError:
                response = ErrorReply(ErrorKind.BAD_REQUEST, f"line longer than {MAX_LINE} bytes")
            except TimeoutError:
                response = ErrorReply(ErrorKind.BAD_REQUEST,
                                      f"no request within {_READ_TIMEOUT:g} s")
            except ProtocolError as error:
                response = ErrorReply(error.kind, str(error))
            else:
                response = await self.handle(request)
            writer.write(encode_response(response))
            await writer.drain()
        except ConnectionError as error:
            log.info("%s: connection lost: %s", peer, error)
            return
        except Exception:
            # A bug in one request must not take the sidecar down (aiosmtpd's
            # handle_exception): answer "internal" and keep serving.
            log.exception("%s: unexpected error", peer)
            response = ErrorReply(ErrorKind.INTERNAL, "unexpected error; see the sidecar's log")
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
    peer = writer.get_extra_info("peername")
    if not peer:
        return "?"
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


def _log_request(peer: str, request: Request | None, response: Response, ms: float) -> None:
    if isinstance(request, HealthRequest):
        log.debug("%s health ok %.1f ms", peer, ms)
        return
    what = (f"transform {request.input} -> {request.output}"
            if isinstance(request, TransformRequest) else "bad request")
    if isinstance(response, TransformOk):
        log.info("%s %s ok %d bytes %.1f ms", peer, what, response.size, ms)
    elif isinstance(response, ErrorReply):
        log.info("%s %s error %s %.1f ms: %s", peer, what, response.kind, ms, response.detail)


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buzon-sidecar",
        usage="%(prog)s [options] --root DIR -- COMMAND [ARGS...]\n"
              "       %(prog)s --health HOST:PORT",
        description="Run COMMAND (stdin to stdout) on spooled messages named over TCP. "
                    "Each option can also be set as BUZON_SIDECAR_<NAME>; flags win.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"buzon {__version__}")
    parser.add_argument("--listen", help="addresses, comma-separated (default 0.0.0.0)")
    parser.add_argument("--port", help="TCP port (default 7000)")
    parser.add_argument("--root", help="spool root shared with smtp (required)")
    parser.add_argument("--timeout", help="seconds per message (default 30)")
    parser.add_argument("--concurrency", help="programs run at once (default 4)")
    parser.add_argument("--queue", help="requests waiting for a slot before busy (default 32)")
    parser.add_argument("--max-output", dest="max_output",
                        help="largest output in bytes (default 20480000)")
    parser.add_argument("--grace", help="seconds to finish in-flight requests on SIGTERM (8)")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--health", metavar="HOST:PORT",
                        help="ask a running sidecar for its health; exit 0 if it answers")
    parser.add_argument("--health-timeout", type=float, default=5.0,
                        help="seconds for --health (default 5)")
    return parser


def _check_health(address: str, timeout: float) -> int:
    try:
        host, port = parse_address(address)
    except ValueError as error:
        print(f"buzon-sidecar: {error}", file=sys.stderr)
        return 2
    try:
        reply = asyncio.run(health(host, port, timeout))
    except TransformError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    print(f"ok: {shlex.join(reply.command)} (busy {reply.busy}/{reply.limit}, "
          f"queued {reply.queued})")
    return 0


def _runnable(program: str) -> bool:
    if os.sep in program:
        return os.path.isfile(program) and os.access(program, os.X_OK)
    return shutil.which(program) is not None


async def _serve(settings: SidecarSettings, command: list[str]) -> int:
    sidecar = Sidecar(settings, command)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await sidecar.start()
    except OSError as error:
        log.error("cannot listen on %s port %d: %s (BUZON_SIDECAR_LISTEN, BUZON_SIDECAR_PORT)",
                  settings.listen, settings.port, error)
        await sidecar.shutdown()
        return 1
    log.info(
        "buzon-sidecar started, pid %d, on %s, root %s, command %s, concurrency %d, queue %d, "
        "timeout %g s", os.getpid(),
        ", ".join(f"[{h}]:{p}" for h, p in sidecar.addresses), settings.root,
        shlex.join(command), settings.concurrency, settings.queue, settings.timeout,
    )
    if not settings.root.is_dir():
        # Not fatal: on a fresh volume smtp creates the spool after we start.
        log.warning("spool root %s does not exist yet; requests fail with 'path' until it does",
                    settings.root)
    await stop.wait()
    log.info("stopping: listeners closed, %d request(s) in flight, grace %g s",
             len(sidecar._tasks), settings.grace)
    await sidecar.shutdown()
    log.info("buzon-sidecar stopped, pid %d", os.getpid())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``buzon-sidecar``.

    Returns:
        0 after a clean shutdown (or a healthy ``--health``); 1 when the listener
        cannot be bound (or ``--health`` gets no good answer); 2 for a
        configuration error, with one line naming the variable.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    args = _parser().parse_args(argv)
    if args.health is not None:
        return _check_health(args.health, args.health_timeout)
    fields = ("listen", "port", "root", "timeout", "concurrency", "queue", "max_output",
              "grace", "log_level")
    kwargs = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    try:
        settings = SidecarSettings(**kwargs)
    except ValidationError as error:
        exit_on_invalid(error, "BUZON_SIDECAR_")
    if not command and settings.command:
        command = shlex.split(settings.command)
    if not command:
        print("buzon-sidecar: configuration error: no program: give `-- COMMAND [ARGS...]` "
              "or BUZON_SIDECAR_COMMAND", file=sys.stderr)
        return 2
    if not _runnable(command[0]):
        print(f"buzon-sidecar: configuration error: program {command[0]!r} not found or not "
              "executable", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(settings, command))


if __name__ == "__main__":
    raise SystemExit(main())
