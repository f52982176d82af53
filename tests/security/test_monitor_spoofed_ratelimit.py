"""Issue 11, finding 7: the monitor's failure limit was keyed on a spoofable UDP source.

Shown against main: forged wrong-token datagrams from the operator's address made
the server ignore the operator (right token included), and 300 rotated source
addresses made 9,000 guesses in 0.7 s, each address having its own budget. The
server must bound guesses across all addresses and never block an address that
has proved it holds the token because of failures attributed to it; and natively
the monitor listens on loopback only.

The real server (``Server``, in-process) answers on 127.0.0.1; the attacker is
plain UDP sockets speaking SPEC §6 bytes. On loopback "forging the operator's
address" is simply sending from 127.0.0.1 on another port (the limit keys on the
host part), and rotation is binding 127.0.0.2, 127.0.0.3, ... No test sleeps: a
reply the operator gets proves the server handled every datagram queued before it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import RunningServer, settings_for

from buzon.config import load_server_settings
from buzon.monitor.wire import Request, Response, Status, decode_response, encode_request

TOKEN = b"t0k3n-ok"  # settings_for's token
WRONG = b"t0k3n-no"
REPLY_TIMEOUT = 3.0  # reached only when a test fails


@contextlib.contextmanager
def running(tmp_path: Path, **overrides: object) -> Iterator[RunningServer]:
    server = RunningServer(settings_for(tmp_path, **overrides)).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def udp(port: int, source: str = "127.0.0.1") -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        yield sock


def req(rid: int, token: bytes = TOKEN, command: int = 0) -> bytes:
    return encode_request(Request(rid, token, command))


def ask(sock: socket.socket, rid: int) -> Response:
    sock.send(req(rid))
    return decode_response(sock.recv(64))


def drain(sock: socket.socket) -> list[Response]:
    """Every reply already queued on ``sock``."""
    sock.setblocking(False)
    replies = []
    with contextlib.suppress(BlockingIOError):
        while True:
            replies.append(decode_response(sock.recv(64)))
    sock.setblocking(True)
    return replies


def test_forged_failures_from_the_operators_address_do_not_lock_it_out(tmp_path: Path) -> None:
    # 45 forged failures: past the 30 a minute that used to block the address for
    # everyone sending from it, within its own allowance plus the global budget.
    with (
        running(tmp_path, monitor_auth_failures_per_minute=30) as server,
        udp(server.monitor_port) as operator,
        udp(server.monitor_port) as forger,  # 127.0.0.1, another port
    ):
        assert ask(operator, 1) == Response.with_u32(1, 0)
        for rid in range(45):
            forger.send(req(rid, WRONG))
        assert ask(operator, 2) == Response.with_u32(2, 0)
        forged = drain(forger)
    assert [r.status for r in forged] == [Status.AUTH_FAILED] * 45


def test_rotating_source_addresses_does_not_multiply_guesses(tmp_path: Path) -> None:
    budget, sources, rounds = 20, 50, 10  # 500 guesses from 127.0.0.2-51
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running(tmp_path, monitor_auth_failures_per_minute=budget))
        operator = stack.enter_context(udp(server.monitor_port))
        assert ask(operator, 0) == Response.with_u32(0, 0)
        guessers = [
            stack.enter_context(udp(server.monitor_port, f"127.0.0.{2 + i}"))
            for i in range(sources)
        ]
        for round_ in range(rounds):
            for sock in guessers:
                sock.send(req(round_, WRONG))
            # The operator, proven above, is answered through the flood; its reply
            # also paces the flood within the server's receive buffer.
            assert ask(operator, 1 + round_) == Response.with_u32(1 + round_, 0)
        answered = [reply for sock in guessers for reply in drain(sock)]
    # Each answer is a tested guess. The budget refills at 20 a minute: the test's
    # few seconds may add one or two.
    assert len(answered) <= budget + 2, f"{len(answered)} guesses answered, budget {budget}"
    assert {r.status for r in answered} == {Status.AUTH_FAILED}


def test_the_native_default_monitor_bind_is_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUZON_MONITOR_LISTEN", raising=False)
    assert load_server_settings([], monitor_token="t0k3n-ok").monitor_hosts == ("127.0.0.1",)
    settings = settings_for(tmp_path)
    defaults = settings.model_copy(
        update={"monitor_listen": type(settings).model_fields["monitor_listen"].default}
    )
    server = RunningServer(defaults).start()
    try:
        assert [host for host, _ in server.server.monitor_addresses] == ["127.0.0.1"]
    finally:
        server.stop()
