"""The real UDP monitor on loopback, and ``monitor-client`` run as a user runs it.

The server runs in-process: ``start_monitor`` on 127.0.0.1 and ::1 (one free
port), in an event loop on a background thread, with counters and a transform
switch the tests set. Requests come from plain sockets or from the client as a
subprocess. No test sleeps: a reply that must *not* arrive is checked after a
later reply to the same server proved the earlier datagram was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from buzon.metrics.counters import Counters
from buzon.monitor.server import start_monitor
from buzon.monitor.wire import (
    Command,
    Request,
    Response,
    Status,
    decode_response,
    encode_request,
    encode_response,
)

TOKEN = b"Zq7Kp2Lw"
WRONG = b"Zq7Kp2Lx"
REPLY_TIMEOUT = 5.0  # only ever reached when a test fails


@dataclass
class Switch:
    configured: bool = True
    enabled: bool = False
    broken: bool = False

    def set_enabled(self, on: bool) -> None:
        if self.broken:
            raise RuntimeError("switch state could not be persisted")
        self.enabled = on


@dataclass
class Running:
    port: int
    counters: Counters
    switch: Switch
    transports: list = field(default_factory=list)


@contextlib.contextmanager
def run_monitor(
    hosts: tuple[str, ...] = ("127.0.0.1", "::1"), *, failures_per_minute: int = 30
) -> Iterator[Running]:
    """The monitor on a free port, served by a loop on its own thread."""
    counters = Counters(
        historic_connections=11,
        concurrent_connections=3,
        bytes_transferred=2**32 + 7,  # saturates on the wire
        mails_sent=2,
    )
    switch = Switch()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="monitor-loop", daemon=True)
    thread.start()
    transports: list = []
    try:
        transports = asyncio.run_coroutine_threadsafe(
            start_monitor(
                hosts,
                0,
                counters=counters,
                token=TOKEN,
                switch=switch,
                failures_per_minute=failures_per_minute,
            ),
            loop,
        ).result(timeout=10)
        port = transports[0].get_extra_info("sockname")[1]
        yield Running(port, counters, switch, transports)
    finally:

        async def close() -> None:
            sockets = [transport.get_extra_info("socket") for transport in transports]
            for transport in transports:
                transport.close()
            while any(sock.fileno() != -1 for sock in sockets):  # closed by connection_lost
                await asyncio.sleep(0)  # one loop turn; the caller's result(timeout) bounds it

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def monitor_factory() -> Iterator[Callable[..., Running]]:
    """Start servers with custom kwargs (aiosmtpd's ``get_controller`` idea)."""
    with contextlib.ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(run_monitor(**kwargs))


@pytest.fixture
def monitor(monitor_factory: Callable[..., Running]) -> Running:
    return monitor_factory()


@contextlib.contextmanager
def udp(
    host: str, port: int | None = None, *, source: str | None = None
) -> Iterator[socket.socket]:
    """A UDP socket bound on ``source`` (default ``host``), connected to host:port if given."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.bind((source or host, 0))
        if port is not None:
            sock.connect((host, port))
        yield sock


def ask(sock: socket.socket, datagram: bytes) -> Response:
    sock.send(datagram)
    return decode_response(sock.recv(64))


def req(command: int, rid: int = 0x1234, token: bytes = TOKEN) -> bytes:
    return encode_request(Request(rid, token, command))


# --------------------------------------------------------------------------- server, raw sockets


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_counters_are_served_over_ipv4_and_ipv6(monitor: Running, host: str) -> None:
    with udp(host, monitor.port) as sock:
        values = [ask(sock, req(c, rid=c)).u32 for c in list(Command)[:4]]
    assert values == [11, 3, 2**32 - 1, 2]


def test_every_status_is_reachable_on_the_wire(monitor: Running) -> None:
    with udp("127.0.0.1", monitor.port) as sock:
        seen = {
            Status.OK: ask(sock, req(Command.MAILS_SENT)),
            Status.AUTH_FAILED: ask(sock, req(Command.MAILS_SENT, token=WRONG)),
            Status.BAD_VERSION: ask(sock, b"\xff\xfe\x01" + req(0)[3:]),
            Status.BAD_COMMAND: ask(sock, req(0x07)),
            Status.BAD_REQUEST: ask(sock, req(0) + b"\x00"),
        }
        monitor.switch.configured = False
        seen[Status.NO_TRANSFORM] = ask(sock, req(Command.TRANSFORM_ENABLE))
        monitor.switch.configured, monitor.switch.broken = True, True
        seen[Status.UNEXPECTED] = ask(sock, req(Command.TRANSFORM_DISABLE))
    assert {status: response.status for status, response in seen.items()} == {s: s for s in Status}
    assert all(response.request_id == 0x1234 for response in seen.values())
    assert monitor.counters.monitor_auth_failures == 1


def test_transform_switch_round_trip(monitor: Running) -> None:
    with udp("::1", monitor.port) as sock:
        flags = [ask(sock, req(c)).flag for c in (4, 5, 4, 6, 4)]
    assert flags == [False, True, True, False, False]


def test_datagrams_that_get_no_reply(monitor: Running) -> None:
    with udp("127.0.0.1", monitor.port) as sock:
        for junk in (b"", b"\xff\xfe\x00", b"\x00" * 14, req(0, rid=1)[:13], req(0, rid=2)[:5]):
            sock.send(junk)
        # Replies come back in order: the first one is for the valid request.
        assert ask(sock, req(0, rid=3)).request_id == 3
    assert monitor.counters.monitor_requests == 6


def test_a_burst_of_1000_requests_is_all_answered(monitor: Running) -> None:
    """4 clients (2 IPv4, 2 IPv6), 250 requests each, 32 in flight per client.

    The window keeps the burst within the kernel's default receive buffer
    (net.core.rmem_max is 208 KiB on stock Linux), so a loss would be the
    server's fault, not the test machine's.
    """
    counters = {0: 11, 1: 3, 2: 2**32 - 1, 3: 2}

    def expected(rid: int) -> Response:
        command = rid % 5
        if command in counters:
            return Response.with_u32(rid, counters[command])
        return Response.with_flag(rid, False)  # 0x04: transformations disabled

    failures: list[str] = []

    def client(index: int, host: str) -> None:
        ids = [index * 1000 + i for i in range(250)]
        window = 32
        answered: set[int] = set()
        with udp(host, monitor.port) as sock:
            for rid in ids[:window]:
                sock.send(req(rid % 5, rid=rid))
            for position in range(len(ids)):
                try:
                    response = decode_response(sock.recv(64))
                except TimeoutError:
                    failures.append(f"client {index}: timed out after {len(answered)} replies")
                    return
                if response != expected(response.request_id):
                    failures.append(f"client {index}: wrong reply {response}")
                answered.add(response.request_id)
                if position + window < len(ids):
                    rid = ids[position + window]
                    sock.send(req(rid % 5, rid=rid))
        if answered != set(ids):
            failures.append(f"client {index}: ids answered != ids sent")

    hosts = ["127.0.0.1", "::1", "127.0.0.1", "::1"]
    threads = [threading.Thread(target=client, args=(i, h)) for i, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert monitor.counters.monitor_requests == 1000


def test_rate_limit_is_global_and_spares_a_proven_address(
    monitor_factory: Callable[..., Running],
) -> None:
    monitor = monitor_factory(failures_per_minute=5)
    with (
        udp("127.0.0.1", monitor.port) as operator,
        udp("127.0.0.1", monitor.port, source="127.0.0.2") as attacker,
        udp("127.0.0.1", monitor.port, source="127.0.0.3") as stranger,
    ):
        assert ask(operator, req(0, rid=1)).u32 == 11  # proves 127.0.0.1
        for rid in range(5):
            assert ask(attacker, req(0, rid=rid, token=WRONG)).status is Status.AUTH_FAILED
        attacker.send(req(0, rid=99))  # the right token, but the budget is spent
        stranger.send(req(0, rid=98))  # another address: the budget is global
        # The proven operator is still served; its reply also proves the server has
        # handled the earlier datagrams (one socket, handled in order).
        assert ask(operator, req(0, rid=100)) == Response.with_u32(100, 11)
        for sock in (attacker, stranger):
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(64)
    assert monitor.counters.monitor_auth_failures == 5
    assert monitor.counters.monitor_requests == 9


def test_ipv6_is_skipped_with_a_warning_only_when_unavailable(
    monitor_factory: Callable[..., Running],
) -> None:
    # 2001:db8:: is documentation space, never a local address: EADDRNOTAVAIL.
    monitor = monitor_factory(hosts=("127.0.0.1", "2001:db8::1"))
    assert len(monitor.transports) == 1
    with udp("127.0.0.1", monitor.port) as sock:
        assert ask(sock, req(0)).u32 == 11


def test_nothing_bound_is_an_error() -> None:
    with pytest.raises(OSError), run_monitor(hosts=("2001:db8::1",)):
        pass  # pragma: no cover


# --------------------------------------------------------------------------- monitor-client


def run_client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    return subprocess.run(
        [sys.executable, "-m", "buzon.monitor.client", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def local_args(port: int) -> list[str]:
    return ["--v0", "-H", "127.0.0.1", "-p", str(port), "-t", TOKEN.decode()]


def client_args(monitor: Running, host: str = "127.0.0.1") -> list[str]:
    return ["--v0", "-H", host, "-p", str(monitor.port), "-t", TOKEN.decode(), "--timeout", "5"]


@pytest.mark.parametrize(
    ("command", "line"),
    [
        ("0", "Historic connections: 11"),
        ("concurrent", "Concurrent connections: 3"),
        ("2", "Bytes transferred: 4294967295"),
        ("mails", "Mails sent: 2"),
        ("4", "Transformations: disabled"),
        ("enable", "Transformations: enabled"),
        ("6", "Transformations: disabled"),
    ],
)
def test_client_prints_the_seed_lines(monitor: Running, command: str, line: str) -> None:
    result = run_client(*client_args(monitor), command)
    assert (result.returncode, result.stderr) == (0, "")
    assert re.fullmatch(rf"Identifier: \d{{1,5}}\n{line}\n", result.stdout)


def test_client_over_ipv6_with_settings_from_the_environment(monitor: Running, tmp_path) -> None:
    token_file = tmp_path / "monitor.token"
    token_file.write_bytes(TOKEN + b"\n")
    env = {
        "BUZON_MONITOR_HOST": "::1",
        "BUZON_MONITOR_PORT": str(monitor.port),
        "BUZON_MONITOR_TOKEN_FILE": str(token_file),
    }
    result = run_client("--v0", "historic", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("Historic connections: 11\n")


def test_client_json_output(monitor: Running) -> None:
    result = run_client(*client_args(monitor), "--json", "bytes")
    data = json.loads(result.stdout)
    assert data.pop("identifier") in range(65536)
    assert data == {"command": "bytes", "status": "ok", "value": 2**32 - 1}


@pytest.mark.parametrize(
    ("setup", "command", "code", "message"),
    [
        ("wrong-token", "0", 11, "Error: Auth failed\n"),
        ("no-program", "enable", 15, "Error: No transform program defined\n"),
        ("broken-switch", "disable", 16, "Error: Unexpected server error\n"),
    ],
)
def test_client_reports_server_errors(
    monitor: Running, setup: str, command: str, code: int, message: str
) -> None:
    args = client_args(monitor)
    if setup == "wrong-token":
        args[args.index("-t") + 1] = WRONG.decode()
    monitor.switch.configured = setup != "no-program"
    monitor.switch.broken = setup == "broken-switch"
    result = run_client(*args, command)
    assert (result.returncode, result.stdout, result.stderr) == (code, "", message)


@contextlib.contextmanager
def fake_server(reply: Callable[[socket.socket, bytes, tuple], None]) -> Iterator[int]:
    """A UDP socket on 127.0.0.1 that answers the first datagram with ``reply``."""
    with udp("127.0.0.1") as sock:

        def serve() -> None:
            with contextlib.suppress(OSError):
                data, peer = sock.recvfrom(64)
                reply(sock, data, peer)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            thread.join(timeout=REPLY_TIMEOUT + 1)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (Status.BAD_VERSION, 12, "Error: Bad version\n"),
        (Status.BAD_COMMAND, 13, "Error: Bad command\n"),
        (Status.BAD_REQUEST, 14, "Error: Bad request\n"),
    ],
)
def test_client_reports_statuses_our_server_cannot_provoke(
    status: Status, code: int, message: str
) -> None:
    def reply(sock: socket.socket, data: bytes, peer: tuple) -> None:
        rid = int.from_bytes(data[3:5], "big")
        sock.sendto(encode_response(Response(rid, status)), peer)

    with fake_server(reply) as port:
        result = run_client(*local_args(port), "0")
    assert (result.returncode, result.stdout, result.stderr) == (code, "", message)


def test_client_accepts_only_the_server_it_asked_with_its_id() -> None:
    def reply(sock: socket.socket, data: bytes, peer: tuple) -> None:
        rid = int.from_bytes(data[3:5], "big")
        forged = encode_response(Response.with_u32(rid, 666))
        with udp("127.0.0.1") as other_port:
            other_port.sendto(forged, peer)  # right address, wrong port
        with udp("127.0.0.2") as other_host:
            other_host.sendto(forged, peer)  # wrong address
        sock.sendto(encode_response(Response.with_u32((rid + 1) % 65536, 777)), peer)
        sock.sendto(b"\xff\xfe\x00garbage", peer)
        sock.sendto(encode_response(Response.with_u32(rid, 2)), peer)

    with fake_server(reply) as port:
        result = run_client(*local_args(port), "0")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith("\nHistoric connections: 2\n")


def test_client_times_out_and_resends_the_same_datagram() -> None:
    with udp("127.0.0.1") as silent:
        port = silent.getsockname()[1]
        quick = ["--timeout", "0.3", "--retries", "1"]
        result = run_client(*local_args(port), *quick, "mails")
        silent.setblocking(False)
        received = [silent.recv(64), silent.recv(64)]
        with pytest.raises(BlockingIOError):
            silent.recv(64)
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr == f"Error: no reply from 127.0.0.1:{port} after 2 tries\n"
    assert received[0] == received[1] and received[0][-1] == Command.MAILS_SENT


def test_client_reports_a_closed_port() -> None:
    with udp("127.0.0.1") as probe:
        port = probe.getsockname()[1]
    # Nothing listens there now: the kernel answers ICMP port unreachable.
    result = run_client(*local_args(port), "--timeout", "0.2", "--retries", "0", "0")
    assert result.returncode == 4
    assert result.stderr == f"Error: no reply from 127.0.0.1:{port} after 1 try: port unreachable\n"


def test_client_without_a_token_exits_2() -> None:
    result = run_client("-H", "127.0.0.1", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "Error: no monitor token: use --token, --token-file, BUZON_MONITOR_TOKEN "
        "or BUZON_MONITOR_TOKEN_FILE\n"
    )


@pytest.mark.parametrize("token", ["short", "changeme"])
def test_client_refuses_a_bad_token_without_echoing_it(token: str) -> None:
    result = run_client("-t", token, "0")
    assert result.returncode == 2
    assert result.stderr.startswith("buzon: configuration error: BUZON_MONITOR_TOKEN: ")
    assert token not in result.stderr


def test_client_reports_an_unreadable_token_file(tmp_path: Path) -> None:
    result = run_client("--token-file", str(tmp_path / "missing"), "0")
    assert result.returncode == 2
    assert "cannot read the monitor token" in result.stderr


def test_client_rejects_an_unknown_command() -> None:
    result = run_client("--v0", "-t", TOKEN.decode(), "7")
    assert result.returncode == 2
    assert "'7' is not a command" in result.stderr


def test_client_help_lists_commands_and_exit_statuses() -> None:
    result = run_client("--help")
    assert result.returncode == 0
    for name in ("historic", "concurrent", "bytes", "mails", "status", "enable", "disable"):
        assert re.search(rf"^  \d  {name} ", result.stdout, re.MULTILINE), name
    for code in (2, 3, 4, 11, 12, 13, 14, 15, 16):
        assert re.search(rf"^  {code} +\S", result.stdout, re.MULTILINE), code
