"""Clients that vanish in the middle of DATA.

Injected: 60 clients each send MAIL, RCPT, DATA and then part of a 16 KB body
(cut at an arbitrary byte, often mid-line) and disappear: a third close the
socket (FIN), a third reset it (RST, ``SO_LINGER`` 0), a third half-close
(``shutdown(SHUT_WR)``) and wait for the server to hang up. Meanwhile 10
ordinary sessions send 20 messages each.

Checked: nothing of a vanished client is queued or delivered; every ordinary
message is acked and delivered exactly once; the session count
(``concurrent_connections``) returns to 0; the server still serves afterwards.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from faults.kit import Ledger, connect, leftovers, make_body, reconcile, send_load, wait_until
from helpers import RunningServer

VANISHERS = 60
HOW = ("close", "reset", "half-close")


async def _vanish(port: int, n: int, rng: random.Random) -> str:
    """One client that stops in the middle of its DATA; returns how it left."""
    how = HOW[n % 3]
    conn = await connect(port)
    try:
        await conn.reply()
        conn.writer.write(
            b"EHLO vanish\r\nMAIL FROM:<v@example.org>\r\nRCPT TO:<vanished@example.org>\r\nDATA\r\n"
        )
        replies = [await conn.reply() for _ in range(4)]
        assert replies[3].startswith("354"), replies
        body = make_body(f"vanished-{n}", 16 * 1024)
        conn.writer.write(body[: rng.randrange(1, len(body) - 1)])
        await conn.writer.drain()
        await asyncio.sleep(rng.random() * 0.2)  # the fault's timing: vanish after a random pause
        if how == "reset":
            sock = conn.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.writer.transport.abort()
        elif how == "half-close":
            conn.writer.write_eof()
            # The server must end the session on its own (it cannot complete the DATA).
            rest = await asyncio.wait_for(conn.reader.read(), 10)
            assert b"250" not in rest, rest
    finally:
        await conn.close()
    return how


def test_clients_vanishing_mid_data_leave_nothing_and_others_are_served(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    counters = server.server.counters
    ledger = Ledger()
    rng = random.Random(6)

    async def scene() -> list[str]:
        normal = asyncio.create_task(send_load(
            server.port, ledger, sessions=10, per_session=20, size=4096, prefix="n"))
        hows = await asyncio.gather(*(_vanish(server.port, n, rng) for n in range(VANISHERS)))
        await normal
        return list(hows)

    hows = asyncio.run(scene())
    assert sorted(set(hows)) == sorted(HOW)
    assert ledger.codes == {"250 2.0.0": 200}, ledger.codes
    assert wait_until(lambda: counters.concurrent_connections == 0, 10), (
        f"{counters.concurrent_connections} sessions still counted")

    # A fresh session afterwards is served as usual.
    later = Ledger()
    asyncio.run(send_load(server.port, later, sessions=1, per_session=3, size=1024, prefix="m"))
    assert later.codes == {"250 2.0.0": 3}
    server.wait_idle(30)
    assert wait_until(lambda: counters.concurrent_connections == 0, 10)

    mail = server.mail_root
    assert not (mail / "vanished").exists(), "a vanished client's message was delivered"
    result = reconcile(ledger.merge(later), mail)
    assert result.delivered == 203
    assert counters.mails_sent == 203
    spool = server.settings.data_dir / "spool"
    assert not any((spool / "queue").iterdir()) and not any((spool / "incoming").iterdir())
    assert not leftovers(mail)
    print(f"\n[vanish] {VANISHERS} vanished mid-DATA ({', '.join(HOW)}): delivered 0; "
          f"others acked {result.acked} = delivered {result.delivered}; sessions open after: 0")
