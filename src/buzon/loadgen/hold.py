"""The hold mode: many idle sessions, then one ``NOOP`` on each.

Theory of operation
-------------------
Open N sessions, keep them idle for ``--hold-for`` seconds, then send ``NOOP``
on each and count the ``250`` answers. Clients bind to 127.0.0.1, 127.0.0.2, …
in turn so tens of thousands of connections do not run out of ephemeral ports
on one source address. When N sessions do not fit this process's file limit
(``RLIMIT_NOFILE``; root cannot always raise it), :func:`hold_split` runs as
many child processes as needed, each holding its share for ``--hold-for`` plus
the time the others may still be opening, and merges their results (latencies
included) into one report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

from buzon.loadgen.result import LoadResult
from buzon.loadgen.send import _SESSION_ERRORS, _connect, _Session

__all__ = ["hold_split", "run_hold"]


async def run_hold(
    host: str, port: int, *, sessions: int, hold_for: float = 5.0, timeout: float = 600.0,
    sources: int = 1,
) -> LoadResult:
    """Open ``sessions`` idle sessions, wait, then NOOP each; ``sent`` counts the 250s."""
    result = LoadResult("hold", sessions)
    opened: list[_Session] = []
    started = time.perf_counter()
    deadline = started + timeout
    limit = asyncio.Semaphore(512)  # connection attempts in flight, to spare the backlog

    async def open_one(i: int) -> None:
        source = f"127.0.0.{1 + i % sources}" if sources > 1 else None
        async with limit:
            try:
                s = await _connect(host, port, source)
                await s.expect("220")
                opened.append(s)
            except _SESSION_ERRORS as error:
                result.error(f"open {i}: {error}")

    await asyncio.wait_for(
        asyncio.gather(*(open_one(i) for i in range(sessions))),
        max(1.0, deadline - time.perf_counter()),
    )
    await asyncio.sleep(hold_for)

    async def noop(s: _Session) -> None:
        try:
            t0 = time.perf_counter()
            s.writer.write(b"NOOP\r\n")
            await s.expect("250")
            result.latencies.append(time.perf_counter() - t0)
            result.sent += 1
        except _SESSION_ERRORS as error:
            result.error(f"noop: {error}")

    await asyncio.wait_for(
        asyncio.gather(*(noop(s) for s in opened)), max(1.0, deadline - time.perf_counter())
    )
    result.seconds = time.perf_counter() - started
    for s in opened:
        s.close()
    return result


def hold_split(args: argparse.Namespace) -> LoadResult:
    """Hold ``args.hold`` sessions over several child processes; one merged result."""
    per = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200)
    k = -(-args.hold // per)
    shares = [args.hold // k + (1 if i < args.hold % k else 0) for i in range(k)]
    sources = max(args.sources, -(-args.hold // 20_000))  # ephemeral ports per source
    # The children open at the same time; holding 10 s longer than asked makes the
    # held periods overlap even if one opens its share slower than another.
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "buzon.loadgen", "--host", args.host, "--port",
             str(args.port), "--hold", str(n), "--sources", str(sources), "--hold-for",
             str(args.hold_for + 10), "--timeout", str(args.timeout), "--raw"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        for n in shares
    ]
    result = LoadResult("hold", args.hold)
    started = time.perf_counter()
    for child in children:
        out, _ = child.communicate()
        try:
            part = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            result.error(f"a hold process exited {child.returncode} without a result")
            continue
        result.sent += part["ok"]
        result.latencies += [ms / 1000 for ms in part["latencies_ms"]]
        for what in part.get("first_errors", []):
            result.error(what)
        result.errors += part["errors"] - len(part.get("first_errors", []))
    result.seconds = time.perf_counter() - started
    return result
