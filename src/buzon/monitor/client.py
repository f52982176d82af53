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
from pathlib import Path

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

__all__ = ["COMMAND_NAMES", "EXIT_NETWORK", "EXIT_NO_REPLY", "EXIT_USAGE", "main", "query"]

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


def query(
    address: tuple[int, tuple], request: Request, *, timeout: float, retries: int
) -> Response:
    """Send ``request`` and wait for the matching reply, resending on timeout.

    Args:
        address: ``(family, sockaddr)`` of the server, as from ``getaddrinfo``.
        request: the request; its id must be matched by the reply.
        timeout: seconds to wait after each send.
        retries: how many times to resend the same datagram after a timeout.

    Returns:
        The first well-formed reply from that address carrying the request's id.

    Raises:
        NoAnswer: every try timed out.
        OSError: the datagram could not be sent (no route, ...).
    """
    family, sockaddr = address
    datagram = encode_request(request)
    refused = False
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # Connected: the kernel delivers only datagrams from exactly this peer.
        sock.connect(sockaddr)
        for _ in range(retries + 1):
            try:
                sock.send(datagram)
            except ConnectionRefusedError:  # an ICMP error from the previous try
                refused = True
                sock.send(datagram)
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    break
                except ConnectionRefusedError:
                    # Nothing listens there (yet); keep waiting out this try, in
                    # case a restarting server answers the copy we resend.
                    refused = True
                    continue
                try:
                    response = decode_response(data)
                except MonitorError:
                    continue
                if response.request_id == request.request_id:
                    return response
    raise NoAnswer(retries + 1, refused)


def _parse_command(text: str) -> Command:
    key = text.strip().lower()
    if key in COMMAND_NAMES:
        return COMMAND_NAMES[key]
    try:
        # "5", "05" and "0x05" all name command 5.
        return Command(int(key, 16) if key.startswith("0x") else int(key))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a command: use 0-6 or one of {', '.join(COMMAND_NAMES)}"
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
        "command", type=_parse_command, metavar="COMMAND", help="0-6 or a name (see commands below)"
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


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _report(command: Command, response: Response, as_json: bool) -> int:
    ok = response.status is Status.OK
    if command in _LABEL:
        value: int | bool = response.u32
        line = f"{_LABEL[command]}: {value}"
    else:
        value = response.flag
        line = f"Transformations: {'enabled' if value else 'disabled'}"
    if as_json:
        result: dict[str, object] = {
            "identifier": response.request_id,
            "command": _NAME_OF[command],
            "status": response.status.name.lower(),
        }
        if ok:
            result["value"] = value
        else:
            result["error"] = _ERROR_TEXT[response.status]
        print(json.dumps(result))
    elif ok:
        print(f"Identifier: {response.request_id}")
        print(line)
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
    args = _parser().parse_args(argv)
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
    where = _show(settings.host, settings.port)
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_DGRAM)
    except OSError as error:
        print(f"Error: cannot resolve {settings.host}: {error.strerror or error}", file=sys.stderr)
        return EXIT_NETWORK
    family, _, _, _, sockaddr = infos[0]
    request = Request(secrets.randbelow(0x10000), token, args.command)
    try:
        response = query(
            (family, sockaddr), request, timeout=settings.timeout, retries=settings.retries
        )
    except NoAnswer as error:
        reason = ": port unreachable" if error.refused else ""
        tries = f"{error.tries} {'try' if error.tries == 1 else 'tries'}"
        print(f"Error: no reply from {where} after {tries}{reason}", file=sys.stderr)
        return EXIT_NETWORK if error.refused else EXIT_NO_REPLY
    except OSError as error:
        print(f"Error: cannot reach {where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_NETWORK
    return _report(args.command, response, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
