"""1,000 slow clients holding sessions while others are served normally.

Injected (in-process server, ``idle_timeout`` 2 s, ``data_timeout`` 3 s), all
from one asyncio thread:

* 250 *silent* clients: read the greeting, then say nothing;
* 250 *stalled* clients: send half a command line ("EHLO slo") and stop;
* 250 *command tricklers*: type a command line one byte every 0.5 s (a line
  never completes within the idle timeout, so no command resets the timer);
* 250 *DATA tricklers*: a quick envelope and DATA, then one body byte every
  0.5 s, forever (every byte is progress in DATA: only the DATA deadline can
  end them).

While all 1,000 hold a slot, 50 ordinary sessions send 200 messages. Checked:
every ordinary message is acked and delivered exactly once; every slow client
is told ``421 4.4.2`` and disconnected within its timeout (+ slack), nothing it
sent is delivered; every slot comes back (``concurrent_connections`` 0, and
1,000 fresh sessions fit again under ``max_connections``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults.kit import Ledger, connect, reconcile, send_load, wait_until
from helpers import RunningServer

from buzon.loadgen import run_hold

IDLE, DATA = 2.0, 3.0
SLACK = 2.5  # scheduling slack on a loaded 2-core machine
KINDS = {"silent": 250, "stalled": 250, "command-trickle": 250, "data-trickle": 250}


@dataclass
class Outcome:
    kind: str
    started: float = 0.0
    """When its timer should have started: greeting, last command, or DATA's 354."""
    cut_after: float | None = None
    last_line: str = ""
    error: str = ""


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if min(needed, hard) < needed:
        pytest.skip(f"needs {needed} open files, hard limit is {hard}")


async def _slow(port: int, kind: str, opened: asyncio.Event, out: Outcome) -> None:
    """One slow client of ``kind``; sets ``opened`` once it holds its slot (or failed)."""
    trickle: asyncio.Task[None] | None = None
    try:
        conn = await connect(port)
    except OSError as error:
        out.error = f"connect: {error}"
        opened.set()
        return
    try:
        await conn.reply()
        out.started = time.monotonic()
        if kind == "stalled":
            conn.writer.write(b"EHLO slo")
        elif kind == "data-trickle":
            conn.writer.write(
                b"MAIL FROM:<slow@example.org>\r\nRCPT TO:<slow@example.org>\r\nDATA\r\n")
            replies = [await conn.reply() for _ in range(3)]
            assert replies[2].startswith("354"), replies
            out.started = time.monotonic()
            trickle = asyncio.create_task(_drip(conn.writer, b"Subject: slow\r\n\r\n" + b"drip " * 200))
        elif kind == "command-trickle":
            line = b"EHLO a-client-that-types-one-character-every-half-second.example.org\r\n"
            trickle = asyncio.create_task(_drip(conn.writer, line * 20))
        opened.set()
        # Read until the server hangs up; its last line is the verdict.
        while True:
            line = await asyncio.wait_for(conn.reader.readline(), 60)
            if not line:
                break
            out.last_line = line.decode("ascii", "replace").rstrip("\r\n")
        out.cut_after = time.monotonic() - out.started
    except (TimeoutError, OSError, asyncio.IncompleteReadError, AssertionError) as error:
        out.error = f"{type(error).__name__}: {error}"
    finally:
        opened.set()
        if trickle is not None:
            trickle.cancel()
            await asyncio.gather(trickle, return_exceptions=True)
        await conn.close()


async def _drip(writer: asyncio.StreamWriter, payload: bytes) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        for i in range(len(payload)):
            if writer.is_closing():
                return
            writer.write(payload[i: i + 1])
            await asyncio.sleep(0.5)  # the trickle under test: one byte every 0.5 s


async def _open_slow(
    port: int, kinds: dict[str, int],
) -> tuple[list[Outcome], list[asyncio.Task[None]]]:
    """Start every slow client; return once each holds its slot (or failed to)."""
    outcomes = [Outcome(kind) for kind, n in kinds.items() for _ in range(n)]
    tasks: list[asyncio.Task[None]] = []
    limit = asyncio.Semaphore(200)  # connection set-ups in flight (spares the accept backlog)

    async def start(out: Outcome) -> None:
        async with limit:
            opened = asyncio.Event()
            tasks.append(asyncio.create_task(_slow(port, out.kind, opened, out)))
            await opened.wait()

    await asyncio.gather(*(start(o) for o in outcomes))
    return outcomes, tasks


def _check(outcomes: list[Outcome]) -> dict[str, float]:
    worst: dict[str, float] = {}
    for out in outcomes:
        assert not out.error, f"{out.kind}: {out.error}"
        limit = DATA if out.kind == "data-trickle" else IDLE
        expected = ("421 4.4.2 mx.test Error: data transfer took too long"
                    if out.kind == "data-trickle" else "421 4.4.2 mx.test Error: timeout exceeded")
        assert out.last_line == expected, f"{out.kind}: last line {out.last_line!r}"
        assert out.cut_after is not None and out.cut_after < limit + SLACK, (
            f"{out.kind} cut after {out.cut_after:.1f} s (limit {limit} s)")
        worst[out.kind] = max(worst.get(out.kind, 0.0), out.cut_after)
    return worst


@pytest.mark.slow
def test_thousand_slow_clients_are_cut_while_others_are_served(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    started = time.monotonic()
    slow_total = sum(KINDS.values())
    _raise_fd_limit(4 * slow_total + 1000)
    server = make_server(idle_timeout=IDLE, data_timeout=DATA, max_connections=slow_total + 60)
    counters = server.server.counters
    ledger = Ledger()

    async def scene() -> tuple[list[Outcome], float]:
        outcomes, tasks = await _open_slow(server.port, KINDS)
        opened = time.monotonic()
        assert counters.concurrent_connections >= slow_total - 5  # all slots held
        # 50 ordinary sessions, 200 messages, while the slow ones hold their slots.
        await send_load(server.port, ledger, sessions=50, per_session=4, size=2048, prefix="s")
        normal_took = time.monotonic() - opened
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return outcomes, normal_took

    outcomes, normal_took = asyncio.run(scene())
    assert ledger.codes == {"250 2.0.0": 200}, (ledger.codes, ledger.errors[:3])
    worst = _check(outcomes)
    assert wait_until(lambda: counters.concurrent_connections == 0, 10)

    # Every slot is free again: 1,000 fresh sessions fit under max_connections.
    again = asyncio.run(run_hold("127.0.0.1", server.port, sessions=slow_total, hold_for=0.1,
                                 timeout=30))
    assert again.sent == slow_total and again.errors == 0, again.first_errors
    assert wait_until(lambda: counters.concurrent_connections == 0, 10)

    server.wait_idle(30)
    result = reconcile(ledger, server.mail_root)
    assert result.delivered == 200
    assert not (server.mail_root / "example.org" / "slow").exists()
    took = time.monotonic() - started
    assert took < 60, f"took {took:.1f} s"
    print(f"\n[slow] {slow_total} slow clients cut, worst seconds after their timer start: "
          + ", ".join(f"{k} {v:.2f}" for k, v in worst.items())
          + f"; normal 200 acked = {result.delivered} delivered in {normal_took:.1f} s;"
          f" {again.sent} fresh sessions fit afterwards; whole test {took:.1f} s")


@pytest.mark.slow
def test_a_long_data_leaves_the_next_idle_period_whole(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    """A live client sends a body for 1.8 × idle_timeout, gets its 250, then is idle.

    The 421 for idleness must come a whole ``idle_timeout`` after the 250, not
    whenever the timer armed during DATA happens to fire.
    """
    server = make_server(idle_timeout=IDLE, data_timeout=10 * DATA)

    async def scene() -> tuple[str, str, float]:
        conn = await connect(server.port)
        try:
            await conn.reply()
            conn.writer.write(
                b"MAIL FROM:<a@example.org>\r\nRCPT TO:<long@example.org>\r\nDATA\r\n")
            assert (await conn.reply()).startswith("250")
            assert (await conn.reply()).startswith("250")
            assert (await conn.reply()).startswith("354")
            started = time.monotonic()
            conn.writer.write(b"Subject: a long DATA\r\n\r\n")
            while time.monotonic() - started < 1.8 * IDLE:
                await asyncio.sleep(0.2)  # the pacing under test: a slow but live body
                conn.writer.write(b"still typing\r\n")
            conn.writer.write(b".\r\n")
            queued = await conn.reply()
            acked_at = time.monotonic()
            cut = await asyncio.wait_for(conn.reply(), 3 * IDLE)
            return queued, cut, time.monotonic() - acked_at
        finally:
            await conn.close()

    queued, cut, idle_for = asyncio.run(scene())
    assert queued.startswith("250 2.0.0"), queued
    assert cut.startswith("421 4.4.2"), cut
    assert idle_for > IDLE - 0.5, f"cut after {idle_for:.2f} s of silence (idle_timeout {IDLE} s)"
