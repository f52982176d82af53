"""``monitor-client`` over protocol v1: one question, or ``watch`` (a ``top`` for Buzón).

Theory of operation
-------------------
A v1 question is one sealed 36-byte request (:mod:`buzon.monitor.wire_v1`) with
a fresh random nonce and the current time, sent by the same resend loop as v0
(:func:`buzon.monitor.client.exchange`); only a reply that carries one of our
nonces and whose seal verifies with the token counts. Unlike v0, each resend is
a *new* request (nonce and timestamp): resending the same datagram would be
refused as a replay (``08``) if only the first answer was lost. Every command
is idempotent (the switch commands set a state), so asking twice is harmless.

``watch`` asks every counter each ``--interval`` seconds and shows it with its
rate per second since the previous refresh: on a terminal it redraws the screen
with ANSI escapes; otherwise (a pipe, a log) it prints one line per refresh.
It stops after ``--count`` refreshes, or on Ctrl-C.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from typing import TextIO

from buzon.monitor.client import EXIT_STATUS_BASE, exchange, print_answer
from buzon.monitor.wire_v1 import (
    CommandV1,
    RequestV1,
    ResponseV1,
    StatusV1,
    decode_response_v1,
    encode_request_v1,
)

__all__ = ["COMMAND_NAMES_V1", "WATCHED", "query_v1", "report_v1", "watch"]

COMMAND_NAMES_V1: dict[str, CommandV1] = {
    "historic": CommandV1.HISTORIC_CONNECTIONS,
    "concurrent": CommandV1.CONCURRENT_CONNECTIONS,
    "bytes": CommandV1.BYTES_TRANSFERRED,
    "mails": CommandV1.MAILS_SENT,
    "status": CommandV1.TRANSFORM_STATUS,
    "enable": CommandV1.TRANSFORM_ENABLE,
    "disable": CommandV1.TRANSFORM_DISABLE,
    "queue": CommandV1.QUEUE_DEPTH,
    "deliveries": CommandV1.DELIVERIES,
    "transform-failures": CommandV1.TRANSFORM_FAILURES,
    "refused": CommandV1.REFUSED_MESSAGES,
}
NAME_OF_V1 = {command: name for name, command in COMMAND_NAMES_V1.items()}

LABEL_V1 = {
    CommandV1.HISTORIC_CONNECTIONS: "Historic connections",
    CommandV1.CONCURRENT_CONNECTIONS: "Concurrent connections",
    CommandV1.BYTES_TRANSFERRED: "Bytes transferred",
    CommandV1.MAILS_SENT: "Mails sent",
    CommandV1.QUEUE_DEPTH: "Queue depth",
    CommandV1.DELIVERIES: "Deliveries",
    CommandV1.TRANSFORM_FAILURES: "Transform failures",
    CommandV1.REFUSED_MESSAGES: "Refused messages",
}

ERROR_TEXT_V1 = {
    StatusV1.AUTH_FAILED: "Auth failed",
    StatusV1.BAD_VERSION: "Bad version",
    StatusV1.BAD_COMMAND: "Bad command",
    StatusV1.BAD_REQUEST: "Bad request",
    StatusV1.NO_TRANSFORM: "No transform program defined",
    StatusV1.UNEXPECTED: "Unexpected server error",
    StatusV1.STALE: "Clock skew: the server's clock differs by more than 30 s",
    StatusV1.REPLAYED: "Request refused as a replay",
}

#: What ``watch`` shows, in order; gauges get no rate.
WATCHED = (
    CommandV1.HISTORIC_CONNECTIONS,
    CommandV1.CONCURRENT_CONNECTIONS,
    CommandV1.BYTES_TRANSFERRED,
    CommandV1.MAILS_SENT,
    CommandV1.DELIVERIES,
    CommandV1.QUEUE_DEPTH,
    CommandV1.TRANSFORM_FAILURES,
    CommandV1.REFUSED_MESSAGES,
)
_GAUGES = {CommandV1.CONCURRENT_CONNECTIONS, CommandV1.QUEUE_DEPTH}


def query_v1(
    address: tuple[int, tuple],
    key: bytes,
    command: int,
    *,
    timeout: float,
    retries: int,
    clock: Callable[[], float] = time.time,
) -> ResponseV1:
    """Ask one v1 question; the reply must carry our nonce and a seal that verifies.

    Raises:
        NoAnswer, PortClosed, OSError: as :func:`buzon.monitor.client.exchange`.
    """
    sent: set[int] = set()

    def datagram() -> bytes:
        request = RequestV1(secrets.randbits(64), int(clock()), command)
        sent.add(request.nonce)
        return encode_request_v1(request, key)

    def accept(data: bytes) -> ResponseV1 | None:
        response = decode_response_v1(data, key)
        return response if response.nonce in sent else None

    return exchange(address, datagram, accept, timeout=timeout, retries=retries)


def report_v1(command: CommandV1, response: ResponseV1, as_json: bool) -> int:
    """Print one answer as v0 does (``Identifier:`` and the value); return the exit status."""
    ok = response.status is StatusV1.OK
    if command in LABEL_V1:
        value: int | bool = response.value
        line = f"{LABEL_V1[command]}: {value}"
    else:
        value = response.value != 0
        line = f"Transformations: {'enabled' if value else 'disabled'}"
    print_answer(identifier=response.nonce, name=NAME_OF_V1[command],
                 status=response.status.name.lower(), ok=ok, value=value, line=line,
                 error=ERROR_TEXT_V1.get(response.status, ""), as_json=as_json)
    if ok:
        return 0
    text = ERROR_TEXT_V1[response.status]
    if response.status is StatusV1.STALE:
        text += f" (server time {response.value}, ours {int(time.time())})"
    print(f"Error: {text}", file=sys.stderr)
    return EXIT_STATUS_BASE + int(response.status)


def _rate(now: int, before: int | None, seconds: float) -> str:
    if before is None or seconds <= 0:
        return "-"
    return f"{(now - before) / seconds:.1f}/s"


def watch(
    ask: Callable[[CommandV1], ResponseV1],
    *,
    interval: float,
    count: int | None,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Refresh the counters every ``interval`` seconds, ``count`` times (None: until Ctrl-C).

    Returns:
        0, or the exit status of the first error answer.
    """
    tty = out.isatty()
    previous: dict[CommandV1, int] = {}
    then: float | None = None
    done = 0
    try:
        while count is None or done < count:
            started = clock()
            values: dict[CommandV1, int] = {}
            for command in WATCHED:
                response = ask(command)
                if response.status is not StatusV1.OK:
                    print(f"Error: {ERROR_TEXT_V1[response.status]}", file=sys.stderr)
                    return EXIT_STATUS_BASE + int(response.status)
                values[command] = response.value
            seconds = started - then if then is not None else 0.0
            cells = []
            for command in WATCHED:
                rate = "" if command in _GAUGES else " " + _rate(
                    values[command], previous.get(command), seconds)
                cells.append((NAME_OF_V1[command], values[command], rate.strip()))
            if tty:
                out.write("\x1b[H\x1b[2J" + time.strftime("buzon  %H:%M:%S") + "\n\n")
                for name, value, rate in cells:
                    out.write(f"  {name:<20}{value:>20}  {rate:>12}\n")
            else:
                out.write(" ".join(
                    f"{name}={value}" + (f"({rate})" if rate else "") for name, value, rate in cells
                ) + "\n")
            out.flush()
            previous, then, done = values, started, done + 1
            if count is None or done < count:
                sleep(max(0.0, interval - (clock() - started)))
    except KeyboardInterrupt:
        out.write("\n")
    return 0
