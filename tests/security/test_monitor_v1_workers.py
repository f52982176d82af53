"""Monitor v1 against ``python -m buzon`` with several worker processes: exact totals.

The supervisor answers the monitor from the mapped counters file (one 64-bit
slot per worker), so the new counters must add up across workers: messages
sent over many connections (spread over the workers by the kernel) are
counted once each in deliveries, and the queue depth of a stuck transform is
the number of messages it holds. Every wait is on a condition.
"""

from __future__ import annotations

import secrets
import smtplib
import socket
import time
from pathlib import Path

from helpers import free_port, server_process, wait_for

from buzon.monitor.wire_v1 import (
    CommandV1,
    RequestV1,
    StatusV1,
    decode_response_v1,
    derive_key,
    encode_request_v1,
)

KEY = derive_key(b"t0k3n-ok")


def value(port: int, command: CommandV1) -> int:
    request = RequestV1(secrets.randbits(64), int(time.time()), command)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.send(encode_request_v1(request, KEY))
        response = decode_response_v1(sock.recv(64), KEY)
    assert (response.nonce, response.status) == (request.nonce, StatusV1.OK)
    return response.value


def send(port: int, connections: int, per_connection: int) -> None:
    for c in range(connections):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            for m in range(per_connection):
                smtp.sendmail("a@example.com", ["bob@mx.test", "eve@mx.test"],
                              f"Subject: {c}.{m}\r\n\r\nbody\r\n")


def test_deliveries_and_queue_depth_add_up_over_three_workers(tmp_path: Path) -> None:
    with server_process(tmp_path / "data", free_port(), env={"BUZON_WORKERS": "3"}) as server:
        send(server.port, connections=12, per_connection=3)
        mon = server.monitor_port
        assert wait_for(lambda: value(mon, CommandV1.DELIVERIES) == 36), value(
            mon, CommandV1.DELIVERIES)
        assert value(mon, CommandV1.MAILS_SENT) == 36
        assert value(mon, CommandV1.QUEUE_DEPTH) == 0
        assert value(mon, CommandV1.TRANSFORM_FAILURES) == 0
        assert value(mon, CommandV1.REFUSED_MESSAGES) == 0
        assert value(mon, CommandV1.HISTORIC_CONNECTIONS) == 12 + 1  # + the start-up probe


def test_a_failing_transform_shows_in_queue_depth_and_failures(tmp_path: Path) -> None:
    env = {"BUZON_WORKERS": "2", "BUZON_TRANSFORM": "false"}
    with server_process(tmp_path / "data", free_port(), env=env) as server:
        send(server.port, connections=4, per_connection=1)
        mon = server.monitor_port
        # Held in the queue by the default "hold" policy, each retried with backoff.
        assert wait_for(lambda: value(mon, CommandV1.TRANSFORM_FAILURES) >= 8)
        assert value(mon, CommandV1.QUEUE_DEPTH) == 4
        assert value(mon, CommandV1.DELIVERIES) == 0
        # Switching transforms off lets the held messages through on their next retry.
        assert value(mon, CommandV1.TRANSFORM_DISABLE) == 0
        assert wait_for(lambda: value(mon, CommandV1.DELIVERIES) == 4)
        assert value(mon, CommandV1.QUEUE_DEPTH) == 0
