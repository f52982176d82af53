"""Issue 11, finding 2, as an operator sees it: the resident memory of a real server.

``python -m buzon`` on its default event loop (uvloop) takes rounds of clients
that each abort a 4 MB DATA; once their connections are gone the server's
VmRSS must be back near where it started. Before the fix it kept about twice
every aborted body until a full collection (3.4 GB in the review).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path

from helpers import LineClient, code, free_port, server_process, wait_for

BODY = 4 * 1024 * 1024
CLIENTS = 8
ROUNDS = 6


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _abort(port: int, reset: bool) -> None:
    c = LineClient(port)
    c.reply()
    assert code(c.cmd("EHLO rss.example")) == "250"
    assert code(c.cmd("MAIL FROM:<a@example.org>")) == "250 2.1.0"
    assert code(c.cmd("RCPT TO:<victim@example.org>")) == "250 2.1.5"
    assert code(c.cmd("DATA")) == "354"
    line = b"r" * 998 + b"\r\n"
    c.send(line * (BODY // len(line)))
    if reset:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def _round(port: int) -> None:
    threads = [threading.Thread(target=_abort, args=(port, bool(i % 2))) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_rss_stays_bounded_after_many_aborted_transfers(tmp_path: Path) -> None:
    env = {"BUZON_MAX_MESSAGE_SIZE": str(2 * BODY), "BUZON_DATA_MEMORY_BUDGET": str(64 * BODY)}
    with server_process(tmp_path / "data", free_port(), env=env) as proc:
        assert proc.proc is not None
        pid = proc.proc.pid
        idle_fds = _fds(pid)
        _round(proc.port)  # warm-up: the allocator's arenas grow once
        assert wait_for(lambda: _fds(pid) <= idle_fds, 10)
        start = _rss_kib(pid)
        for _ in range(ROUNDS):
            _round(proc.port)
            assert wait_for(lambda: _fds(pid) <= idle_fds, 10)
        grown_mb = (_rss_kib(pid) - start) / 1024
        total_mb = ROUNDS * CLIENTS * BODY / 2**20
        assert grown_mb < 48, f"RSS grew {grown_mb:.0f} MB after {total_mb:.0f} MB of aborted DATA"
