#!/usr/bin/env python3
"""Server CPU per ``GET /metrics``: what one Prometheus scrape costs Buzón.

Starts a Buzón on loopback (pinned to CPU 0 with ``taskset`` when it exists),
scrapes ``/metrics`` N times from this process and divides the server's CPU
time (utime + stime from /proc) by N. Multiply by the scrape rate and compare
with the CPU a message costs (docs/performance.md) to get a scrape interval's
share of the server. Usage: ``python3 scripts/scrape_cost.py [--scrapes N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scrapes", type=int, default=2000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="buzon-scrape-"))
    http, smtp, monitor = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    env.update(BUZON_HTTP_LISTEN="127.0.0.1", BUZON_HTTP_PORT=str(http),
               BUZON_SMTP_LISTEN="127.0.0.1", BUZON_MONITOR_LISTEN="127.0.0.1",
               BUZON_LOG_LEVEL="WARNING")
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    server = subprocess.Popen(
        [*pin, sys.executable, "-m", "buzon", "-p", str(smtp), "-P", str(monitor),
         "-u", "scr4pe!T", "-d", str(data)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}/metrics"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not answer on /metrics") from None
                time.sleep(0.1)
        for _ in range(50):  # warm up
            urllib.request.urlopen(url).read()
        before, started = _cpu(server.pid), time.monotonic()
        for _ in range(args.scrapes):
            body = urllib.request.urlopen(url).read()
        cpu = _cpu(server.pid) - before
        wall = time.monotonic() - started
        print(f"{args.scrapes} scrapes of {len(body):,} bytes: server CPU "
              f"{cpu / args.scrapes * 1000:.3f} ms per scrape, "
              f"{wall / args.scrapes * 1000:.2f} ms wall each")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
