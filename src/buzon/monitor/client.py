"""``monitor-client``: ask a Buzón server one monitor question over UDP.

Theory of operation
-------------------
One request, one reply (SPEC §6). The request id is drawn from :mod:`secrets`,
so an off-path host cannot guess it to forge a reply. The socket is *connected*
to the server's address: the kernel then drops datagrams from any other address
or port, and on top of that a reply counts only if it decodes and carries the
id we sent. On a timeout the very same datagram (same id) is sent again, up to
``--retries`` times, so a reply to an earlier copy still counts.

Settings come from flags, then ``BUZON_MONITOR_*`` variables, then defaults
(:class:`buzon.config.ClientSettings`); a bad value exits 2 with one line per
error, never echoing the token.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from buzon.config import ClientSettings, exit_on_invalid
from buzon.monitor.token import TokenError, read_token_file
from buzon.monitor.wire import (
    Command,
    MonitorError,
    Request,
    Response,
    Status,
    decode_response,
    encode_request,
)
from buzon.net import format_address

__all__ = [
    "COMMAND_NAMES", "EXIT_NETWORK", "EXIT_NO_REPLY", "EXIT_USAGE", "NoAnswer", "PortClosed",
    "exchange", "main", "query",
]

T = TypeVar("T")

EXIT_USAGE = 2
EXIT_NO_REPLY = 3
EXIT_NETWORK = 4
#: A server status s (0x01-0x06) exits with EXIT_STATUS_BASE + s.
EXIT_STATUS_BASE = 10

COMMAND_NAMES: dict[str, Command] = {
    "historic": Command.HISTORIC_CONNECTIONS,
    "concurrent": Command.CONCURRENT_CONNECTIONS,
    "bytes": Command.BYTES_TRANSFERRED,
    "mails": Command.MAILS_SENT,
    "status": Command.TRANSFORM_STATUS,
    "enable": Command.TRANSFORM_ENABLE,
    "disable": Command.TRANSFORM_DISABLE,
}
_NAME_OF = {command: name for name, command in COMMAND_NAMES.items()}

_LABEL = {
    Command.HISTORIC_CONNECTIONS: "Historic connections",
    Command.CONCURRENT_CONNECTIONS: "Concurrent connections",
    Command.BYTES_TRANSFERRED: "Bytes transferred",
    Command.MAILS_SENT: "Mails sent",
}

_DESCRIPTION = {
    Command.HISTORIC_CONNECTIONS: "SMTP connections accepted since the first start",
    Command.CONCURRENT_CONNECTIONS: "SMTP connections open now",
    Command.BYTES_TRANSFERRED: "bytes read from and written to SMTP clients",
    Command.MAILS_SENT: "messages accepted (250 at the end of DATA)",
    Command.TRANSFORM_STATUS: "whether transformations are enabled",
    Command.TRANSFORM_ENABLE: "enable transformations",
    Command.TRANSFORM_DISABLE: "disable transformations",
}

_ERROR_TEXT = {
    Status.AUTH_FAILED: "Auth failed",
    Status.BAD_VERSION: "Bad version",
    Status.BAD_COMMAND: "Bad command",
    Status.BAD_REQUEST: "Bad request",
    Status.NO_TRANSFORM: "No transform program defined",
    Status.UNEXPECTED: "Unexpected server error",
}


class NoAnswer(Exception):
    """No valid reply arrived from the server in time."""

    def __init__(self, tries: int, refused: bool) -> None:
        super().__init__(f"no reply after {tries} tries")
        self.tries = tries
        #: The host said (ICMP) that nothing listens on that port.
        self.refused = refused


class PortClosed(Exception):
    """The host answered ICMP port unreachable: nothing listens on that port."""

    def __init__(self, tries: int) -> None:
        super().__init__(f"port unreachable after {tries} tries")
        self.tries = tries


def exchange(
    address: tuple[int, tuple],
    datagram: bytes | Callable[[], bytes],
    accept: Callable[[bytes], T | None],
    *,
    timeout: float,
    retries: int,
) -> T:
    """Send ``datagram`` and return the first reply ``accept`` takes, resending on timeout.

    Args:
        address: ``(family, sockaddr)`` of the server, as from ``getaddrinfo``.
        datagram: the request, resent unchanged after each timeout; or a function
            making the request for each try (v1: a fresh nonce and timestamp).
        accept: decodes a received datagram; None (or a ``MonitorError``) when it
            is not the reply to this request.
        timeout: seconds to wait after each send.
        retries: how many times to resend after a timeout.

    Raises:
        NoAnswer: every try timed out.
        PortClosed: the kernel reported ICMP port unreachable (ends at once).
        OSError: the datagram could not be sent (no route, ...).
    """
    family, sockaddr = address
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # Connected: the kernel delivers only datagrams from exactly this peer, and
        # reports an ICMP refusal to the next send or recv.
        sock.connect(sockaddr)
        for attempt in range(1, retries + 2):
            try:
                sock.send(datagram if isinstance(datagram, bytes) else datagram())
            except ConnectionRefusedError:
                raise PortClosed(attempt - 1 or 1) from None
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    break
                except ConnectionRefusedError:
                    raise PortClosed(attempt) from None
                try:
                    reply = accept(data)
                except MonitorError:
                    continue
                if reply is not None:
                    return reply
    raise NoAnswer(retries + 1, False)


def query(
    address: tuple[int, tuple], request: Request, *, timeout: float, retries: int
) -> Response:
    """Send a v0 ``request`` and wait for the reply carrying its id (see :func:`exchange`)."""

    def accept(data: bytes) -> Response | None:
        response = decode_response(data)
        return response if response.request_id == request.request_id else None

    return exchange(address, encode_request(request), accept, timeout=timeout, retries=retries)


def _parse_command(text: str, v0: bool = True) -> Command:
    """A command by number or name; v1 (``v0=False``) also knows 7-10.

    Raises:
        argparse.ArgumentTypeError: not a command of that version.
    """
    from buzon.monitor.client_v1 import COMMAND_NAMES_V1
    from buzon.monitor.wire_v1 import CommandV1

    names: dict = COMMAND_NAMES if v0 else COMMAND_NAMES_V1
    kind: type = Command if v0 else CommandV1
    key = text.strip().lower()
    if key in names:
        return names[key]
    try:
        # "5", "05" and "0x05" all name command 5.
        return kind(int(key, 16) if key.startswith("0x") else int(key))
    except ValueError:
        last = 6 if v0 else 10
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a command: use 0-{last} or one of {', '.join(names)}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {int(c)}  {_NAME_OF[c]:<11} {_DESCRIPTION[c]}" for c in Command)
    statuses = "\n".join(
        f"  {EXIT_STATUS_BASE + int(s)}  Error: {text}" for s, text in _ERROR_TEXT.items()
    )
    epilog = (
        f"commands:\n{commands}\n\n"
        "exit status:\n"
        "  0   success\n"
        f"  {EXIT_USAGE}   usage or configuration error, missing or invalid token\n"
        f"  {EXIT_NO_REPLY}   no reply from the server after all tries\n"
        f"  {EXIT_NETWORK}   network error: host unknown, unreachable, or port closed\n"
        "  17  v1: clock skew past 30 s (Error: Clock skew ...)\n"
        "  18  v1: request refused as a replay\n"
        f"{statuses}\n\n"
        "Every option can also be set with BUZON_MONITOR_<OPTION> (e.g. BUZON_MONITOR_HOST,\n"
        "BUZON_MONITOR_TOKEN_FILE); a flag wins over the variable."
    )
    parser = argparse.ArgumentParser(
        prog="monitor-client",
        description="Query or switch a Buzón server through its UDP monitor protocol.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", metavar="COMMAND",
        help="0-6 or a name (see commands below); v1 adds 7 queue, 8 deliveries, "
        "9 transform-failures, 10 refused; or 'watch' for a live view",
    )
    parser.add_argument("-H", "--host", help="server host name or address (default localhost)")
    parser.add_argument("-p", "--port", type=int, help="server UDP port (default 2626)")
    parser.add_argument("-t", "--token", help="the 8-character monitor token")
    parser.add_argument(
        "--token-file",
        type=Path,
        dest="token_file",
        help="file holding the token (the server's <data_dir>/monitor.token)",
    )
    parser.add_argument("--timeout", type=float, help="seconds to wait for each reply (default 5)")
    parser.add_argument("--retries", type=int, help="resends after a timeout (default 2)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--all-replicas", action="store_true", help=(
        "ask every address the host resolves to (Swarm: tasks.smtp) and print the sum"))
    parser.add_argument("--v0", action="store_true",
                        help="speak protocol v0 (token in clear, 32-bit counters; the seed's)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="watch: seconds between refreshes (default 2)")
    parser.add_argument("--count", type=int, default=None,
                        help="watch: stop after this many refreshes (default: until Ctrl-C)")
    return parser


def _token(args: argparse.Namespace, settings: ClientSettings) -> bytes:
    # Flags outrank the environment: --token-file beats BUZON_MONITOR_TOKEN.
    if args.token is None and args.token_file is not None:
        return read_token_file(args.token_file)
    if settings.token is not None:
        return settings.token.get_secret_value().encode("ascii")
    if settings.token_file is not None:
        return read_token_file(settings.token_file)
    raise TokenError(
        "no monitor token: use --token, --token-file, BUZON_MONITOR_TOKEN "
        "or BUZON_MONITOR_TOKEN_FILE"
    )


def print_answer(
    *, identifier: int, name: str, status: str, ok: bool, value: int | bool, line: str,
    error: str, as_json: bool,
) -> None:
    """Print one answer on stdout, in v0's text (``Identifier:`` and the value line) or
    as one JSON object; shared by both protocol versions so their output stays alike."""
    if as_json:
        result: dict[str, object] = {"identifier": identifier, "command": name,
                                     "status": status}
        if ok:
            result["value"] = value
        else:
            result["error"] = error
        print(json.dumps(result))
    elif ok:
        print(f"Identifier: {identifier}")
        print(line)


def _report(command: Command, response: Response, as_json: bool) -> int:
    ok = response.status is Status.OK
    if command in _LABEL:
        value: int | bool = response.u32
        line = f"{_LABEL[command]}: {value}"
    else:
        value = response.flag
        line = f"Transformations: {'enabled' if value else 'disabled'}"
    print_answer(identifier=response.request_id, name=_NAME_OF[command],
                 status=response.status.name.lower(), ok=ok, value=value, line=line,
                 error=_ERROR_TEXT.get(response.status, ""), as_json=as_json)
    if ok:
        return 0
    print(f"Error: {_ERROR_TEXT[response.status]}", file=sys.stderr)
    return EXIT_STATUS_BASE + int(response.status)


def main(argv: list[str] | None = None) -> int:
    """Run ``monitor-client``.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status (see ``--help``).

    Raises:
        SystemExit: for ``--help``, usage errors and configuration errors (2).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    watching = not args.v0 and args.command.strip().lower() == "watch"
    if not watching:
        try:
            args.command = _parse_command(args.command, v0=args.v0)
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument COMMAND: {error}")
    if args.interval <= 0 or (args.count is not None and args.count < 1):
        parser.error("--interval must be positive and --count at least 1")
    if watching and args.all_replicas:
        parser.error("--all-replicas asks one question; watch one replica at a time")
    options = ("host", "port", "token", "token_file", "timeout", "retries")
    overrides = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
    try:
        settings = ClientSettings(**overrides)
    except ValidationError as error:
        exit_on_invalid(error, "BUZON_MONITOR_")
    try:
        token = _token(args, settings)
    except TokenError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USAGE
    where = format_address(settings.host, settings.port)
    try:
        infos = socket.getaddrinfo(settings.host.split(",")[0] if args.all_replicas
                                   else settings.host, settings.port, type=socket.SOCK_DGRAM)
    except OSError as error:
        print(f"Error: cannot resolve {settings.host}: {error.strerror or error}", file=sys.stderr)
        return EXIT_NETWORK
    family, _, _, _, sockaddr = infos[0]
    try:
        if args.all_replicas:  # every address, summed
            from buzon.monitor.client_all import run_all

            return run_all(token, args, settings)
        if args.v0:
            request = Request(secrets.randbelow(0x10000), token, args.command)
            response = query(
                (family, sockaddr), request, timeout=settings.timeout, retries=settings.retries
            )
            return _report(args.command, response, args.json)
        return _v1((family, sockaddr), token, args, settings, watching)
    except PortClosed as error:
        tries = f"{error.tries} {'try' if error.tries == 1 else 'tries'}"
        print(f"Error: no reply from {where} after {tries}: port unreachable", file=sys.stderr)
        return EXIT_NETWORK
    except NoAnswer as error:
        tries = f"{error.tries} {'try' if error.tries == 1 else 'tries'}"
        print(f"Error: no reply from {where} after {tries}", file=sys.stderr)
        return EXIT_NO_REPLY
    except OSError as error:
        print(f"Error: cannot reach {where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_NETWORK


def _v1(
    address: tuple[int, tuple],
    token: bytes,
    args: argparse.Namespace,
    settings: ClientSettings,
    watching: bool,
) -> int:
    from buzon.monitor import client_v1
    from buzon.monitor.wire_v1 import derive_key

    key = derive_key(token)

    def ask(command: int) -> object:
        return client_v1.query_v1(
            address, key, command, timeout=settings.timeout, retries=settings.retries
        )

    if watching:
        return client_v1.watch(ask, interval=args.interval, count=args.count,  # type: ignore[arg-type]
                               out=sys.stdout)
    return client_v1.report_v1(args.command, ask(args.command), args.json)  # type: ignore[arg-type]


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: client_v1 imports
    # buzon.monitor.client, and its exceptions must be the ones caught here.
    from buzon.monitor.client import main as _main

    raise SystemExit(_main())
