#!/usr/bin/env python3
"""Per-message cost of a transform: LocalCommand(tac) and SidecarTransform(tac) on loopback.

    python scripts/bench_transform.py [--messages 200] [--size 2048] [--no-fsync]
                                      [--program tac] [--dir DIR]

Each message is transformed on its own, one after another (latency, not
throughput): write the spooled input, ``await transform.run(src, dst)``, check
the output. The time of ``run`` alone is recorded; the script prints the median,
90th percentile and mean in milliseconds. The sidecar is started as a real
``python -m buzon.transform.sidecar`` process on 127.0.0.1 with the same
program, and warmed up with a few messages first (as is the local runner).
Each transform is measured on the plain asyncio loop and, when installed, on
uvloop (the server's default loop), since the two spawn processes differently.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from buzon.transform import LocalCommand, SidecarTransform, Transform, TransformError, health

WARMUP = 10


def _message(size: int, seed: int) -> bytes:
    head = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: bench %d\r\n\r\n" % seed
    line = b"The quick brown fox jumps over the lazy dog %08d.\r\n" % seed
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size]


async def _measure(transform: Transform, work: Path, count: int, size: int) -> list[float]:
    times: list[float] = []
    for i in range(-WARMUP, count):
        src, dst = work / f"m{i}.in", work / f"m{i}.out"
        src.write_bytes(_message(size, i))
        started = time.perf_counter()
        await transform.run(src, dst)
        elapsed = (time.perf_counter() - started) * 1000
        if dst.stat().st_size != size:
            raise SystemExit(f"output of message {i} has the wrong size")
        src.unlink()
        dst.unlink()
        if i >= 0:
            times.append(elapsed)
    return times


def _run(coro: Any, loop: str) -> Any:
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


def _report(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    print(f"{name:<36} median {statistics.median(times):7.3f} ms   p90 {p90:7.3f} ms   "
          f"mean {statistics.fmean(times):7.3f} ms   (n={len(times)})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=2048, help="bytes per message")
    parser.add_argument("--program", default="tac", help="the transform program line")
    parser.add_argument("--no-fsync", action="store_true", help="skip the flush before rename")
    parser.add_argument("--dir", help="where to put the spool (default: the system temp dir); "
                                      "use the file system the real spool lives on")
    args = parser.parse_args()
    argv = shlex.split(args.program)
    fsync = not args.no_fsync

    with tempfile.TemporaryDirectory(prefix="bench-transform-", dir=args.dir) as tmp:
        root = Path(tmp) / "work"
        (root / "w0").mkdir(parents=True)
        key_file = Path(tmp) / "sidecar.key"
        key = secrets.token_bytes(32)
        key_file.write_text(key.hex())
        print(f"{args.messages} messages of {args.size} bytes, program {args.program!r}, "
              f"fsync {'on' if fsync else 'off'}, spool {root}")

        local = LocalCommand(argv, timeout=30, max_output=1 << 24, fsync=fsync)
        for loop in _loops():
            _report(f"LocalCommand({args.program}) {loop}",
                    _run(_measure(local, root / "w0", args.messages, args.size), loop))

        port = _free_port()
        env = dict(os.environ, BUZON_SIDECAR_FSYNC=str(fsync).lower(),
                   BUZON_SIDECAR_LOG_LEVEL="WARNING", BUZON_SIDECAR_KEY_FILE=str(key_file))
        proc = subprocess.Popen(
            [sys.executable, "-m", "buzon.transform.sidecar", "--listen", "127.0.0.1",
             "--port", str(port), "--root", str(root), "--", *argv],
            env=env,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    asyncio.run(health("127.0.0.1", port, 1, key=key))
                    break
                except TransformError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the sidecar did not start") from None
                    time.sleep(0.05)
            sidecar = SidecarTransform("127.0.0.1", port, root, timeout=30, key=key)
            for loop in _loops():
                _report(f"SidecarTransform({args.program}) {loop}",
                        _run(_measure(sidecar, root / "w0", args.messages, args.size), loop))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
