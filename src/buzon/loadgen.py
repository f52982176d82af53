"""``buzon-load``: an asyncio SMTP load generator (no dependency beyond the stdlib).

Theory of operation
-------------------
*send mode*: ``--sessions`` concurrent SMTP sessions share ``--messages``
messages of ``--size`` bytes to ``--rcpts`` recipients each. A message's
latency runs from its ``MAIL`` to its final ``250``. With ``--pipelining`` the
envelope (MAIL, RCPT…, DATA) goes in one write, as RFC 2920 allows. Every
reply is checked; anything but the expected code counts as an error, and a
session that breaks stops (its remaining messages count as errors).

*hold mode* (``--hold N``): open N sessions, keep them idle for ``--hold-for``
seconds, then send ``NOOP`` on each and count the ``250`` answers. Clients bind
to 127.0.0.1, 127.0.0.2, … in turn so tens of thousands of connections do not
run out of ephemeral ports on one source address. When N sessions do not fit
this process's file limit (``RLIMIT_NOFILE``; root cannot always raise it), the
generator splits itself into as many child processes as needed, each holding
its share for ``--hold-for`` plus the time the others may still be opening,
and merges their results (latencies included) into one report.

With ``--maildir ROOT`` it then waits until the number of new files under
``ROOT/<domain>/<local>/new`` (and ``cur``) has grown by every (message × recipient) acknowledged, so the
figure includes delivery, not just queueing.

Everything is bounded: a global ``--timeout`` ends the run whatever happens.
Only loopback or addresses you own are fair targets (the generator does not
check; the operator does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LoadResult", "main", "run_hold", "run_send"]

PRESETS = {
    # The seed's stress test: 500 threads, one message each.
    "seed": dict(sessions=500, messages=500, size=512, rcpts=1),
    "1k": dict(sessions=100, messages=5000, size=1024, rcpts=1),
    "100k": dict(sessions=100, messages=1000, size=100 * 1024, rcpts=1),
}


@dataclass
class LoadResult:
    """What a run measured."""

    mode: str
    sessions: int
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    delivered: int | None = None
    deliver_seconds: float | None = None
    first_errors: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)) if lat else (
            lambda q: None
        )
        out: dict[str, object] = {
            "mode": self.mode,
            "sessions": self.sessions,
            "ok": self.sent,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "msgs_per_s": round(self.sent / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }
        if self.delivered is not None:
            out["delivered"] = self.delivered
            out["delivered_per_s"] = (
                round(self.delivered / self.deliver_seconds, 1) if self.deliver_seconds else None
            )
        if self.first_errors:
            out["first_errors"] = self.first_errors
        return out


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        while True:
            line = (await self.reader.readuntil(b"\r\n")).decode("ascii", "replace")
            if len(line) < 4 or line[3] != "-":
                return line.rstrip("\r\n")

    async def expect(self, prefix: str) -> None:
        line = await self.reply()
        if not line.startswith(prefix):
            raise ValueError(f"expected {prefix}, got {line!r}")

    def close(self) -> None:
        self.writer.close()


def _body(size: int, n: int) -> bytes:
    head = f"Subject: load {n}\r\nFrom: <load@example.org>\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n"
    filler = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head + filler + b"\r\n"  # the end-of-data dot must start a line


async def _connect(host: str, port: int, source: str | None) -> _Session:
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local, limit=1 << 16)
    return _Session(reader, writer)


async def run_send(
    host: str, port: int, *, sessions: int, messages: int, size: int, rcpts: int,
    pipelining: bool = False, timeout: float = 300.0, rcpt_domain: str = "example.org",
    mailboxes: int = 100,
) -> LoadResult:
    """Send ``messages`` messages over ``sessions`` concurrent sessions; see module doc."""
    result = LoadResult("send", sessions)
    remaining = [messages]
    bodies = {n % 8: _body(size, n) for n in range(8)}

    async def one_session(index: int) -> None:
        try:
            s = await _connect(host, port, None)
        except OSError as error:
            result.error(f"connect: {error}")
            return
        try:
            await s.expect("220")
            s.writer.write(b"EHLO loadgen\r\n")
            await s.expect("250")
            while remaining[0] > 0:
                remaining[0] -= 1
                n = remaining[0]
                boxes = [f"user{(n + k) % mailboxes}@{rcpt_domain}" for k in range(rcpts)]
                envelope = [b"MAIL FROM:<load@example.org>\r\n"] + [
                    f"RCPT TO:<{b}>\r\n".encode() for b in boxes
                ] + [b"DATA\r\n"]
                started = time.perf_counter()
                if pipelining:
                    s.writer.write(b"".join(envelope))
                    for expected in ["250"] * (1 + rcpts) + ["354"]:
                        await s.expect(expected)
                else:
                    for line, expected in zip(envelope, ["250"] * (1 + rcpts) + ["354"]):
                        s.writer.write(line)
                        await s.expect(expected)
                s.writer.write(bodies[n % 8] + b".\r\n")
                await s.expect("250")
                result.latencies.append(time.perf_counter() - started)
                result.sent += 1
            s.writer.write(b"QUIT\r\n")
            await s.expect("221")
        except (OSError, ValueError, asyncio.IncompleteReadError) as error:
            result.error(f"session {index}: {error}")
        finally:
            s.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(one_session(i)) for i in range(sessions)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    result.seconds = time.perf_counter() - started
    result.errors += remaining[0] if remaining[0] > 0 else 0
    if pending:
        result.error(f"{len(pending)} sessions still running at the {timeout}s timeout")
    return result


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
            except (OSError, ValueError, asyncio.IncompleteReadError) as error:
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
        except (OSError, ValueError, asyncio.IncompleteReadError) as error:
            result.error(f"noop: {error}")

    await asyncio.wait_for(
        asyncio.gather(*(noop(s) for s in opened)), max(1.0, deadline - time.perf_counter())
    )
    result.seconds = time.perf_counter() - started
    for s in opened:
        s.close()
    return result


def count_delivered(root: Path) -> int:
    """Files in every ``new`` and ``cur`` folder of ``<root>/<domain>/<local>`` (Buzón)
    or ``<root>/<local>`` (the benchmark's Postfix)."""
    total = 0
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    boxes = list(top)
    for entry in top:
        try:
            boxes.extend(os.scandir(entry.path))
        except (FileNotFoundError, NotADirectoryError):
            pass
    for box in boxes:
        for sub in ("new", "cur"):
            try:
                total += sum(1 for _ in os.scandir(os.path.join(box.path, sub)))
            except (FileNotFoundError, NotADirectoryError):
                pass
    return total


async def wait_delivered(root: Path, target: int, started: float, timeout: float) -> tuple[int, float]:
    """Poll until ``target`` files are in the Maildirs; returns (count, seconds since started)."""
    deadline = time.perf_counter() + timeout
    count = count_delivered(root)
    while count < target and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        count = count_delivered(root)
    return count, time.perf_counter() - started


def _hold_split(args: argparse.Namespace) -> LoadResult:
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


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="buzon-load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="named workload (seed: 500x1)")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100, help="total messages")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    parser.add_argument("--mailboxes", type=int, default=100, help="distinct recipients used")
    parser.add_argument("--pipelining", action="store_true")
    parser.add_argument("--hold", type=int, metavar="N", help="hold N idle sessions instead")
    parser.add_argument("--hold-for", type=float, default=5.0)
    parser.add_argument("--sources", type=int, default=1, help="127.0.0.x source addresses")
    parser.add_argument("--maildir", type=Path, help="mail root to watch for deliveries")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)  # JSON + latencies
    args = parser.parse_args(argv)
    if args.preset:
        for key, value in PRESETS[args.preset].items():
            setattr(args, key, value)

    async def go() -> LoadResult:
        if args.hold:
            _raise_fd_limit(args.hold + 100)
            return await run_hold(
                args.host, args.port, sessions=args.hold, hold_for=args.hold_for,
                timeout=args.timeout, sources=args.sources,
            )
        _raise_fd_limit(args.sessions + 100)
        before = count_delivered(args.maildir) if args.maildir else 0
        started = time.perf_counter()
        result = await run_send(
            args.host, args.port, sessions=args.sessions, messages=args.messages,
            size=args.size, rcpts=args.rcpts, pipelining=args.pipelining,
            timeout=args.timeout, mailboxes=args.mailboxes,
        )
        if args.maildir:
            target = before + result.sent * min(args.rcpts, args.mailboxes)
            count, seconds = await wait_delivered(args.maildir, target, started, args.timeout)
            result.delivered, result.deliver_seconds = count - before, seconds
            if count < target:
                result.error(f"only {count - before} of {target - before} delivered")
        return result

    if args.hold and args.hold + 100 > resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        result = _hold_split(args)
    else:
        result = asyncio.run(go())
    summary = result.summary()
    if args.raw:
        summary["latencies_ms"] = [round(x * 1000, 3) for x in result.latencies]
        print(json.dumps(summary))
    elif args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>16}: {value}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
