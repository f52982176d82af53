"""Monitor protocol v1 against a real Buzón on 127.0.0.1: 64-bit counters, the MAC, replays.

Requests are built with the codec (``buzon.monitor.wire_v1``) and sent from plain
sockets, so a test can replay one byte for byte or break its MAC; the
``monitor-client`` subprocess is checked for the closed-port case and ``watch``.
No test sleeps: each waits on a condition (a reply, delivery done).
"""

from __future__ import annotations

import os
import re
import secrets
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from helpers import RunningServer, free_port, wait_for

from buzon.monitor.wire import Request, decode_response, encode_request
from buzon.monitor.wire_v1 import (
    CommandV1,
    RequestV1,
    ResponseV1,
    StatusV1,
    decode_response_v1,
    derive_key,
    encode_request_v1,
    encode_response_v1,
)

TOKEN = b"t0k3n-ok"  # the harness's token (helpers.settings_for)
KEY = derive_key(TOKEN)


def exchange(port: int, datagram: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.send(datagram)
        return sock.recv(64)


def ask(port: int, command: int, *, key: bytes = KEY, nonce: int | None = None) -> ResponseV1:
    request = RequestV1(secrets.randbits(64) if nonce is None else nonce, int(time.time()), command)
    return decode_response_v1(exchange(port, encode_request_v1(request, key)), KEY)


def value(port: int, command: int) -> int:
    response = ask(port, command)
    assert response.status is StatusV1.OK, response
    return response.value


def test_counters_past_2_32_are_exact_in_v1_and_saturate_in_v0(server: RunningServer) -> None:
    big = 2**32 + 12345
    server.server.counters.bytes_transferred = big  # type: ignore[union-attr]
    server.server.counters.mails_sent = 2**40 + 1  # type: ignore[union-attr]
    assert value(server.monitor_port, CommandV1.MAILS_SENT) == 2**40 + 1
    assert value(server.monitor_port, CommandV1.BYTES_TRANSFERRED) == big
    v0 = decode_response(exchange(server.monitor_port, encode_request(Request(7, TOKEN, 0x02))))
    assert v0.u32 == 0xFFFF_FFFF


def test_a_replayed_request_is_refused(server: RunningServer) -> None:
    datagram = encode_request_v1(RequestV1(secrets.randbits(64), int(time.time()), 3), KEY)
    first = decode_response_v1(exchange(server.monitor_port, datagram), KEY)
    again = decode_response_v1(exchange(server.monitor_port, datagram), KEY)
    assert first.status is StatusV1.OK
    assert (again.status, again.value) == (StatusV1.REPLAYED, 0)


def test_a_stale_request_is_refused_with_the_servers_time(server: RunningServer) -> None:
    old = RequestV1(secrets.randbits(64), int(time.time()) - 3600, 3)
    reply = decode_response_v1(exchange(server.monitor_port, encode_request_v1(old, KEY)), KEY)
    assert reply.status is StatusV1.STALE
    assert abs(reply.value - time.time()) < 60


def test_a_wrong_hmac_is_refused_and_the_token_is_never_on_the_wire(
    server: RunningServer,
) -> None:
    request = RequestV1(secrets.randbits(64), int(time.time()), 0)
    right = encode_request_v1(request, KEY)
    assert TOKEN not in right and KEY not in right
    wrong = encode_request_v1(request, derive_key(b"wr0ngTok"))
    reply = decode_response_v1(exchange(server.monitor_port, wrong), KEY)
    assert reply == ResponseV1(request.nonce, StatusV1.AUTH_FAILED)
    flipped = right[:-1] + bytes([right[-1] ^ 1])
    reply = decode_response_v1(exchange(server.monitor_port, flipped), KEY)
    assert reply.status is StatusV1.AUTH_FAILED
    assert server.server.counters.monitor_auth_failures == 2  # type: ignore[union-attr]


def test_v0_is_unchanged_beside_v1(server: RunningServer) -> None:
    reply = exchange(server.monitor_port, encode_request(Request(0x1234, TOKEN, 0x00)))
    assert len(reply) == 14 and reply[:5] == b"\xff\xfe\x00\x12\x34" and reply[5] == 0


def test_new_commands_after_a_known_load(server: RunningServer) -> None:
    sent = 5
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        for n in range(sent):
            smtp.sendmail("a@example.com", ["bob@mx.test", "carol@mx.test"], f"Subject: {n}\r\n\r\nhi\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("a@example.com", ["../etc@mx.test"], "x")  # RCPT refused
    server.wait_idle()
    port = server.monitor_port
    assert wait_for(lambda: value(port, CommandV1.DELIVERIES) == sent)
    assert value(port, CommandV1.QUEUE_DEPTH) == 0
    assert value(port, CommandV1.MAILS_SENT) == sent
    assert value(port, CommandV1.TRANSFORM_FAILURES) == 0
    assert value(port, CommandV1.REFUSED_MESSAGES) == 0  # nothing refused at DATA
    assert ask(port, 0x0B).status is StatusV1.BAD_COMMAND


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    return subprocess.run(
        [sys.executable, "-m", "buzon.monitor.client", *args],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )


def test_the_client_speaks_v1_by_default(server: RunningServer) -> None:
    server.server.counters.bytes_transferred = 2**33  # type: ignore[union-attr]
    result = run_client("-H", "127.0.0.1", "-p", str(server.monitor_port), "-t", TOKEN.decode(),
                        "bytes")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Identifier: \d+\nBytes transferred: 8589934592\n", result.stdout)


def test_a_closed_port_is_reported_at_once() -> None:
    port = free_port(socket.SOCK_DGRAM)
    started = time.monotonic()
    result = run_client("-H", "127.0.0.1", "-p", str(port), "-t", TOKEN.decode(), "0")
    assert time.monotonic() - started < 2
    assert result.returncode == 4
    assert result.stderr == f"Error: no reply from 127.0.0.1:{port} after 1 try: port unreachable\n"


def test_watch_prints_refreshes_with_rates(server: RunningServer) -> None:
    result = run_client("-H", "127.0.0.1", "-p", str(server.monitor_port), "-t", TOKEN.decode(),
                        "watch", "--interval", "0.2", "--count", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert "historic=0(-)" in lines[0] and "queue=0 " in lines[0]
    assert re.search(r"historic=0\(0\.0/s\)", lines[1]), lines[1]


def test_the_client_ignores_forged_replies_and_resends_a_fresh_request() -> None:
    """A reply that is not sealed with the token never counts; each try is a new nonce."""
    received: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)

        def serve() -> None:
            first, peer = sock.recvfrom(64)  # dropped: as if the answer were lost
            received.append(first)
            second, peer = sock.recvfrom(64)
            received.append(second)
            nonce = int.from_bytes(second[3:11], "big")
            forged = encode_response_v1(ResponseV1(nonce, StatusV1.OK, 666), derive_key(b"wr0ngTok"))
            sock.sendto(forged, peer)
            sock.sendto(encode_response_v1(ResponseV1(nonce, StatusV1.OK, 2**33), KEY), peer)

        thread = threading.Thread(target=serve)
        thread.start()
        result = run_client("-H", "127.0.0.1", "-p", str(sock.getsockname()[1]), "-t",
                            TOKEN.decode(), "--timeout", "0.5", "--retries", "1", "deliveries")
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\nDeliveries: 8589934592\n")
    assert len(received) == 2 and received[0][3:11] != received[1][3:11]
    assert all(TOKEN not in datagram for datagram in received)
