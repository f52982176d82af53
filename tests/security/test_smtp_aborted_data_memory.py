"""Issue 11, finding 2: an aborted DATA frees its body when the session ends.

Before: the reader raised ``IncompleteReadError`` with a copy of the buffered
body, the session turned it into a ``CancelledError`` that kept it as context,
and task, protocol and reader formed a cycle (plus an idle timer re-armed after
the connection was gone) that held about twice the body until a full
collection. Here the cycle collector is switched off while clients abort
2 MB transfers, half by closing (FIN), half by resetting (RST), against a real
server on loopback; the memory still allocated afterwards must stay small.
"""

from __future__ import annotations

import gc
import socket
import struct
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from helpers import LineClient, RunningServer, code, wait_for

BODY = 2 * 1024 * 1024
ROUNDS = 10


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()
        gc.collect()


def _abort_a_transfer(port: int, reset: bool) -> None:
    c = LineClient(port)
    c.reply()
    assert code(c.cmd("EHLO leaky.example")) == "250"
    assert code(c.cmd("MAIL FROM:<a@example.org>")) == "250 2.1.0"
    assert code(c.cmd("RCPT TO:<victim@example.org>")) == "250 2.1.5"
    assert code(c.cmd("DATA")) == "354"
    line = b"x" * 998 + b"\r\n"
    c.send(line * (BODY // len(line)))  # never the terminator
    if reset:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def test_aborted_transfers_leave_no_body_behind(
    make_server: Callable[..., RunningServer], no_cycle_collector: None
) -> None:
    server = make_server(max_message_size=4 * BODY, data_memory_budget=64 * BODY)
    counters = server.server.counters
    _abort_a_transfer(server.port, reset=False)  # warm up: first-use allocations
    assert wait_for(lambda: counters.concurrent_connections == 0, 10)
    before = tracemalloc.get_traced_memory()[0]
    for i in range(ROUNDS):
        _abort_a_transfer(server.port, reset=bool(i % 2))
        assert wait_for(lambda: counters.concurrent_connections == 0, 10)
    grown = tracemalloc.get_traced_memory()[0] - before
    # Before the fix: about 2 x BODY per aborted session (40 MB here).
    assert grown < BODY, f"{grown / 1e6:.1f} MB still allocated after {ROUNDS} aborted DATA"
