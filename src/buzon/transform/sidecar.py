"""The transform sidecar: ``buzon-sidecar [options] --root DIR -- COMMAND [ARGS...]``.

Theory of operation
-------------------
A sidecar container shares the work area (a volume of transform files only)
with ``smtp`` and runs one program (``tac``, ``spamc``, yours) on messages the
server names over TCP in requests sealed with the deployment key (the server is
:class:`~buzon.transform.sidecar_server.Sidecar`, the protocol
:mod:`buzon.transform.wire`, both documented in docs/protocol.md). This module
is the process around it: its settings
(:class:`~buzon.transform.sidecar_settings.SidecarSettings`, ``BUZON_SIDECAR_*``,
flags win) are built once in :func:`main`, a bad value exits 2 with one line naming
the variable; so does a missing or unreadable key (``BUZON_SIDECAR_KEY_FILE``):
a sidecar never serves unauthenticated. The program is checked to be runnable
before anything listens. Then, as uvicorn's ``Server`` does it: start the listeners (exit 1 if
one cannot be bound), log the start with the pid and the bound addresses, wait;
SIGTERM or SIGINT only set an event; shutdown closes the listeners, lets
requests in flight finish for ``--grace`` seconds, cancels (and so kills) what
is left, and exits 0.

``buzon-sidecar --health HOST:PORT`` sends one health request and exits 0 when
it is answered, 1 otherwise (the Compose healthcheck); it needs the key too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import signal
import sys

from pydantic import ValidationError

from buzon import __version__
from buzon.config import exit_on_invalid
from buzon.net import format_address, parse_address
from buzon.transform.auth import load_key
from buzon.transform.client import health
from buzon.transform.failures import TransformError
from buzon.transform.sidecar_server import Sidecar
from buzon.transform.sidecar_settings import SidecarSettings

__all__ = ["Sidecar", "SidecarSettings", "main"]

log = logging.getLogger("buzon.sidecar")


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
    parser.add_argument("--listen", help="addresses, comma-separated (default 127.0.0.1)")
    parser.add_argument("--port", help="TCP port (default 7000)")
    parser.add_argument("--root", help="work area shared with smtp (required)")
    parser.add_argument("--key-file", dest="key_file",
                        help="file holding the deployment key (required)")
    parser.add_argument("--max-skew", dest="max_skew",
                        help="seconds a request's timestamp may be off (default 30)")
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


_NO_KEY = ("buzon-sidecar: configuration error: BUZON_SIDECAR_KEY_FILE: no key: set it (or "
           "--key-file) to the file holding the deployment key that smtp's "
           "BUZON_TRANSFORM_KEY_FILE names (python -m buzon.transform.keygen FILE makes one)")


def _key(path: str | os.PathLike[str] | None) -> bytes | None:
    """The key, or None after printing one line naming the setting."""
    if path is None:
        print(_NO_KEY, file=sys.stderr)
        return None
    try:
        return load_key(path)
    except ValueError as error:
        print(f"buzon-sidecar: configuration error: BUZON_SIDECAR_KEY_FILE: {error}",
              file=sys.stderr)
        return None


def _check_health(address: str, timeout: float, key_file: str | None) -> int:
    try:
        host, port = parse_address(address)
    except ValueError as error:
        print(f"buzon-sidecar: {error}", file=sys.stderr)
        return 2
    key = _key(key_file or os.environ.get("BUZON_SIDECAR_KEY_FILE") or None)
    if key is None:
        return 2
    try:
        reply = asyncio.run(health(host, port, timeout, key=key))
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


async def _serve(settings: SidecarSettings, command: list[str], key: bytes) -> int:
    sidecar = Sidecar(settings, command, key)
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
        "timeout %g s, requests authenticated", os.getpid(),
        ", ".join(format_address(h, p) for h, p in sidecar.addresses), settings.root,
        shlex.join(command), settings.concurrency, settings.queue, settings.timeout,
    )
    if not settings.root.is_dir():
        # Not fatal: on a fresh volume smtp creates the work area after we start.
        log.warning("work area %s does not exist yet; requests fail with 'path' until it does",
                    settings.root)
    await stop.wait()
    log.info("stopping: listeners closed, %d request(s) in flight, grace %g s",
             sidecar.in_flight, settings.grace)
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
        return _check_health(args.health, args.health_timeout, args.key_file)
    fields = ("listen", "port", "root", "key_file", "max_skew", "timeout", "concurrency",
              "queue", "max_output", "grace", "log_level")
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
    key = _key(settings.key_file)
    if key is None:
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(settings, command, key))


if __name__ == "__main__":
    raise SystemExit(main())
