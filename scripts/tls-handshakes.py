#!/usr/bin/env python3
"""The cost of TLS per SMTP session: handshakes per second on one core.

Theory of operation
-------------------
``openssl s_time`` cannot speak STARTTLS, so this script does it: it starts a
fresh Buzón (``python -m buzon``, uvloop, TLS on with its generated EC P-256
certificate) pinned to CPU 0 with ``taskset``, and runs clients in a process
pool pinned to CPU 1 (``--client-cpus``). Each client session is

* ``plain``:    connect, 220, EHLO, QUIT, 221;
* ``starttls``: connect, 220, EHLO, STARTTLS, 220, TLS handshake (a full one:
  no session resumption, the client verifies the chain against ca.pem and the
  name), EHLO, QUIT, 221;
* ``implicit``: connect, TLS handshake, 220, EHLO, QUIT, 221.

For each mode it reports sessions per second as observed, and the server's CPU
time per session read from ``/proc/<pid>/stat`` (utime + stime) around the run;
``1 / cpu per session`` is what one core can do when the server is the
bottleneck, which is the figure to quote (the observed rate may be limited by
the client core). Modes run interleaved for ``--repeat`` rounds and the best
round of each is reported, the one least disturbed by other load. The difference between ``starttls`` and ``plain`` is the cost
of TLS per session.

Every process it starts is stopped by pid; the temporary directory is removed.

    python scripts/tls-handshakes.py                     # 3 rounds of 3000 sessions per mode
    python scripts/tls-handshakes.py --sessions 5000 --procs 8 --modes starttls
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reply(sock: socket.socket | ssl.SSLSocket, buf: bytearray) -> bytes:
    """Read one whole (possibly multi-line) reply; the last line."""
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        if len(line) < 4 or line[3:4] != b"-":
            return line


def _client(args: tuple[str, int, int, int, str, list[int]]) -> int:
    mode, port, tls_port, count, cafile, cpus = args
    if cpus:
        os.sched_setaffinity(0, cpus)
    context = ssl.create_default_context(cafile=cafile)
    done = 0
    for _ in range(count):
        buf = bytearray()
        with socket.create_connection((HOST, tls_port if mode == "implicit" else port)) as raw:
            sock: socket.socket | ssl.SSLSocket = raw
            if mode == "implicit":
                sock = context.wrap_socket(raw, server_hostname=HOST)
            assert _reply(sock, buf).startswith(b"220")
            sock.sendall(b"EHLO bench.example\r\n")
            assert _reply(sock, buf).startswith(b"250")
            if mode == "starttls":
                sock.sendall(b"STARTTLS\r\n")
                assert _reply(sock, buf).startswith(b"220")
                sock = context.wrap_socket(raw, server_hostname=HOST)
                sock.sendall(b"EHLO bench.example\r\n")
                assert _reply(sock, buf).startswith(b"250")
            sock.sendall(b"QUIT\r\n")
            assert _reply(sock, buf).startswith(b"221")
        done += 1
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3000, help="sessions per mode")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--modes", default="plain,starttls,implicit")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--server-cpu", default="0", help="taskset list for the server")
    parser.add_argument("--client-cpus", default="1", help="CPUs for the clients")
    options = parser.parse_args()
    cpus = [int(c) for c in options.client_cpus.split(",") if c]
    work = Path(tempfile.mkdtemp(prefix="buzon-tls-bench-"))
    port, tls_port = _free_port(), _free_port()
    env = {**os.environ, "BUZON_SMTP_LISTEN": HOST, "BUZON_TLS_LISTEN": HOST,
           "BUZON_SMTPS_PORT": str(tls_port), "BUZON_HTTP_LISTEN": "", "BUZON_HOSTNAME": "localhost",
           "BUZON_LOG_LEVEL": "WARNING", "BUZON_FSYNC": "false"}
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen(
        ["taskset", "-c", options.server_cpu, sys.executable, "-m", "buzon",
         "-p", str(port), "-P", "0", "-d", str(work / "data")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        cafile = work / "data" / "tls" / "ca.pem"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                if cafile.exists():
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {(work / 'server.log').read_text()}")
            time.sleep(0.05)
        print(f"server pid {server.pid} on CPU {options.server_cpu}, clients: {options.procs} "
              f"processes on CPU {options.client_cpus}, {options.sessions} sessions per mode")
        print(f"{'mode':10} {'sessions/s':>11} {'server CPU ms/session':>22} {'1-core capacity/s':>18}")
        per_proc = options.sessions // options.procs
        results: dict[str, float] = {}
        rates: dict[str, float] = {}
        with concurrent.futures.ProcessPoolExecutor(options.procs) as pool:
            list(pool.map(_client, [("plain", port, tls_port, 20, str(cafile), cpus)] * options.procs))
            # Modes interleaved, --repeat rounds; the best round of each is kept (the
            # least disturbed by anything else running on the machine).
            for _ in range(options.repeat):
                for mode in options.modes.split(","):
                    cpu0, t0 = _cpu_seconds(server.pid), time.perf_counter()
                    done = sum(pool.map(_client, [(mode, port, tls_port, per_proc, str(cafile), cpus)]
                                        * options.procs))
                    elapsed = time.perf_counter() - t0
                    time.sleep(0.2)  # the server's last closes
                    cpu = _cpu_seconds(server.pid) - cpu0
                    results[mode] = min(results.get(mode, cpu / done), cpu / done)
                    rates[mode] = max(rates.get(mode, 0.0), done / elapsed)
            for mode, per in results.items():
                print(f"{mode:10} {rates[mode]:11.0f} {per * 1000:22.3f} {1 / per:18.0f}")
        if "plain" in results and "starttls" in results:
            extra = results["starttls"] - results["plain"]
            print(f"TLS adds {extra * 1000:.3f} ms of server CPU per session "
                  f"({1 / extra:.0f} handshakes/s on one core, handshake alone)")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
