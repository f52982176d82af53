"""The ``buzon-load`` command line: flags, presets, the run, the printed summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

from buzon.loadgen.hold import hold_split, run_hold
from buzon.loadgen.maildir import count_delivered, wait_delivered
from buzon.loadgen.result import LoadResult
from buzon.loadgen.send import parse_mix, run_send

__all__ = ["PRESETS", "main"]

PRESETS = {
    # The seed's stress test: 500 threads, one message each.
    "seed": {"sessions": 500, "messages": 500, "size": 512, "rcpts": 1},
    "1k": {"sessions": 100, "messages": 5000, "size": 1024, "rcpts": 1},
    "100k": {"sessions": 100, "messages": 1000, "size": 100 * 1024, "rcpts": 1},
}


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
        except (ValueError, OSError):
            pass


def _mix(text: str) -> list[tuple[int, float]]:
    try:
        return parse_mix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    doc = (sys.modules["buzon.loadgen"].__doc__ or "buzon-load").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="buzon-load", description=doc)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="named workload (seed: 500x1)")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100, help="total messages")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="send for S seconds instead of --messages (each session "
                             "finishes the message it is sending)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--mix", type=_mix, metavar="SIZE:WEIGHT,...",
                        help="draw each message's size by weight, e.g. "
                             "4096:70,102400:25,2097152:5 (overrides --size)")
    parser.add_argument("--seed", type=int, default=1, help="fixes the sizes --mix draws")
    parser.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    parser.add_argument("--mailboxes", type=int, default=100, help="distinct recipients used")
    parser.add_argument("--pipelining", action="store_true")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds a session waits after a 4xx before its next message")
    parser.add_argument("--hold", type=int, metavar="N", help="hold N idle sessions instead")
    parser.add_argument("--hold-for", type=float, default=5.0)
    parser.add_argument("--sources", type=int, default=1, help="127.0.0.x source addresses")
    parser.add_argument("--maildir", type=Path, help="mail root to watch for deliveries")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--announce", action="store_true",
                        help='print {"event": "started", "started_at": EPOCH} when sending '
                             "begins (for a harness that samples on the same clock)")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)  # JSON + latencies
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.preset:
        for key, value in PRESETS[args.preset].items():
            setattr(args, key, value)
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")

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
        if args.announce:
            print(json.dumps({"event": "started", "started_at": round(time.time(), 3)}),
                  flush=True)
        result = await run_send(
            args.host, args.port, sessions=args.sessions, messages=args.messages,
            size=args.size, rcpts=args.rcpts, pipelining=args.pipelining,
            timeout=args.timeout, mailboxes=args.mailboxes, duration=args.duration,
            mix=args.mix, seed=args.seed, pause=args.pause,
        )
        if args.maildir:
            target = before + result.sent * min(args.rcpts, args.mailboxes)
            count, seconds = await wait_delivered(args.maildir, target, started, args.timeout)
            result.delivered, result.deliver_seconds = count - before, seconds
            if count < target:
                result.error(f"only {count - before} of {target - before} delivered")
        return result

    if args.hold and args.hold + 100 > resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        result = hold_split(args)
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
