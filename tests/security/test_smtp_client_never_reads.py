"""Issue 11, finding 4: a client that never reads cannot outlive the idle timeout.

Before: at the idle timeout the session wrote its 421 and closed the transport,
and closing waited for the write buffer to drain, which it never did: the slot
and the descriptor stayed taken. Now the transport is aborted after a short
grace. The client here pipelines EHLO (a long reply) with a tiny receive
buffer and never reads; the only session slot must come free.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from helpers import LineClient, RunningServer, code, wait_for


def _stuff_without_reading(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.2)
    batch = b"EHLO never-reads.example\r\n" * 2000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the server stops taking commands
        try:
            sock.sendall(batch)
        except TimeoutError:
            break
    return sock


def test_a_client_that_never_reads_is_cut_and_its_slot_freed(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_connections=1, idle_timeout=0.5)
    counters = server.server.counters
    stuck = _stuff_without_reading(server.port)
    try:
        assert counters.concurrent_connections == 1
        with LineClient(server.port) as other:  # the slot is taken
            assert code(other.reply()) == "421 4.3.2"
        # idle timeout 0.5 s + 2 s grace; before the fix, never
        assert wait_for(lambda: counters.concurrent_connections == 0, 8), "slot still held"
        with LineClient(server.port) as after:
            assert code(after.reply()) == "220"
    finally:
        stuck.close()
