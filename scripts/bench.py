#!/usr/bin/env python3
"""Benchmark Buzón against a private Postfix instance, side by side, on buzon-load.

Theory of operation
-------------------
For each workload the harness starts a fresh Buzón (``python -m buzon``, native,
its queue and Maildir writes flushed to disk as shipped) and a fresh private
Postfix (``scripts/postfix-instance.sh``: loopback, Maildir via virtual(8),
Postfix's own fsyncs as shipped), both on 127.0.0.1, each with its own temporary
directory. It then runs ``buzon-load --maildir`` against each server in turn,
``--repeat`` times, alternating which server goes first, so the timings include
delivery into the Maildirs and neither server always gets the warmer machine.

Around every run it reads the servers' CPU time from ``/proc``: utime+stime of the
server process and all its descendants, plus cutime+cstime (the CPU of children
that already exited and were reaped: Postfix's smtpd/cleanup/virtual come and
go). For Postfix the tree is rooted at the instance's ``master`` (its pid file),
so it covers smtpd, cleanup, qmgr, trivial-rewrite, virtual, postlogd... After
the load generator returns (every message delivered), the harness waits until
the server's CPU stops moving (Postfix: and its queue is empty) before the
second reading, so the tail of the work is counted. Between runs the delivered
files are removed, as a mail reader would.

Reported per workload and server: medians over the repetitions of accepted
msgs/s, delivered msgs/s (until the last file is in ``new/``), p50/p99 latency
(MAIL to the final 250), server CPU per message, the server's resident memory
(peak of 1 s samples, summed over its processes: overcounts Postfix's shared
pages), and the errors summed over repetitions; then the Buzón/Postfix ratios
and the issue's targets.

Every process it starts is stopped by pid, and the temporary directories
removed, on success, failure, Ctrl-C or SIGTERM. Traffic goes to 127.0.0.x only.

Run as root (Postfix's private instance and the file-descriptor limits need it):
    python scripts/bench.py                      # every workload, 3 repetitions
    python scripts/bench.py --only 1k,100k --repeat 3 --json bench.json
    python scripts/bench.py --quick              # a small smoke run (~1 minute)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POSTFIX_SCRIPT = REPO / "scripts" / "postfix-instance.sh"
TOKEN = "b3nch!Tk"  # 8 characters, not one of the server's well-known tokens
NOFILE = 120_000  # RLIMIT_NOFILE wanted for every child (hold needs ~50k fds a side)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class _Pin:
    """Command prefixes that pin the servers and the load generator (``--pin``)."""

    server: tuple[str, ...] = ()
    loadgen: tuple[str, ...] = ()


PIN = _Pin()


@dataclass(frozen=True)
class Workload:
    name: str
    what: str
    sessions: int = 0
    messages: int = 0
    size: int = 1024
    hold: int = 0
    timeout: float = 300.0
    postfix: bool = True


WORKLOADS = {
    "1k": Workload("1k", "1 KB, 100 sessions", 100, 5000, 1024),
    "100k": Workload("100k", "100 KB, 100 sessions", 100, 1000, 100 * 1024),
    "500": Workload("500", "1 KB, 500 sessions", 500, 2500, 1024),
    "2000": Workload("2000", "1 KB, 2,000 sessions", 2000, 4000, 1024, timeout=600.0),
    # Postfix runs one smtpd process per session: 50,000 processes are not a fair
    # or bounded test of it, so hold is Buzón only.
    "hold": Workload("hold", "50,000 idle sessions, then NOOP", hold=50_000, timeout=600.0,
                     postfix=False),
}
QUICK = {
    "1k": Workload("1k", "1 KB, 20 sessions (quick)", 20, 400, 1024, timeout=60.0),
    "100k": Workload("100k", "100 KB, 20 sessions (quick)", 20, 100, 100 * 1024, timeout=60.0),
    "500": Workload("500", "1 KB, 50 sessions (quick)", 50, 200, 1024, timeout=60.0),
    "2000": Workload("2000", "1 KB, 200 sessions (quick)", 200, 400, 1024, timeout=60.0),
    "hold": Workload("hold", "2,000 idle sessions (quick)", hold=2000, timeout=60.0,
                     postfix=False),
}


# --------------------------------------------------------------------------- /proc


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, own+reaped-children CPU ticks, rss pages) of one process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17, rss=24
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return int(rest[1]), ticks, int(rest[21])


def _tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st:
                children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_usage(root: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of ``root``'s process tree, reaped children included."""
    ticks = rss = 0
    for pid in _tree(root):
        st = _stat(pid)
        if st:
            ticks += st[1]
            rss += st[2]
    return ticks / TICK, rss * PAGE


class RssSampler(threading.Thread):
    """Samples a process tree's RSS once a second; ``peak`` is the largest sum.

    With ``port``, also the peak number of established connections to it.
    """

    def __init__(self, root: int, port: int | None = None) -> None:
        super().__init__(daemon=True)
        self.root, self.port, self.peak, self.peak_conns = root, port, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, tree_usage(self.root)[1])
                if self.port:
                    self.peak_conns = max(self.peak_conns, established(self.port))
            self._halt.wait(1.0)

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        with contextlib.suppress(Exception):
            self.peak = max(self.peak, tree_usage(self.root)[1])
        return self.peak


# --------------------------------------------------------------------------- servers


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    """Ask for NOFILE fds for this process, which every child inherits: root with
    CAP_SYS_RESOURCE may raise the hard limit; anyone may raise the soft limit to
    the hard one (the fallback)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold_workers_for(sessions: int, limit: int) -> int:
    """Worker processes for ``sessions`` idle sessions: each kept to 70% of its fd limit,
    since SO_REUSEPORT spreads connections by hash, evenly but not exactly."""
    return max(1, -(-sessions // int(limit * 0.7)))


def nofile_limit() -> int:
    """The fd limit every child gets (after :func:`_raise_nofile` in this process)."""
    _raise_nofile()
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def established(port: int, host: str = "127.0.0.1") -> int:
    """Server-side TCP connections in ESTABLISHED state on ``host:port``.

    (Clients bound to 127.0.0.2… may use the same port number as their local port,
    so the address is matched too.)
    """
    addr = socket.inet_aton(host)
    want = f"{int.from_bytes(addr, sys.byteorder):08X}:{port:04X}".encode()
    # A set of peers, not a count of lines: /proc/net/tcp is read in pages while
    # sockets come and go, and a line can be seen twice (a 50,000-session hold
    # once counted 55,123).
    peers = set()
    with contextlib.suppress(OSError), open("/proc/net/tcp", "rb") as f:
        next(f, None)
        for line in f:
            # "  sl  local_address rem_address   st ...": local is field 1, state field 3
            parts = line.split(None, 4)
            if parts[3] == b"01" and parts[1] == want:
                peers.add(parts[2])
    return len(peers)


def wait_banner(port: int, alive, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("server exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError as error:
            last = error
        time.sleep(0.1)
    raise RuntimeError(f"no 220 banner on 127.0.0.1:{port} after {timeout}s ({last})")


class Server:
    name: str
    port: int
    mail: Path
    root_pid: int

    def clear_mail(self) -> None:
        """Remove delivered files (new/ and cur/), as a mail reader would."""
        if not self.mail.is_dir():
            return
        boxes = list(os.scandir(self.mail))  # Postfix: mail/<local>; Buzón: mail/<domain>/<local>
        for top in list(boxes):
            with contextlib.suppress(NotADirectoryError):
                boxes.extend(os.scandir(top.path))
        for box in boxes:
            for sub in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for f in os.scandir(os.path.join(box.path, sub)):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(f.path)

    def busy(self) -> bool:
        """Work still queued (checked before the CPU reading after a run)."""
        return False


class Buzon(Server):
    name = "buzon"

    def __init__(self, base: Path, workers: int = 1, scrape: float | None = None) -> None:
        self.base = base
        self.workers = workers
        self.scrape = scrape
        self.http_port = free_port() if scrape else None
        self.data = base / "data"
        self.mail = self.data / "mail"
        self.port = free_port()
        self.monitor_port = free_port(socket.SOCK_DGRAM)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.data.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
        env.update(
            BUZON_SMTP_LISTEN="127.0.0.1",
            BUZON_MONITOR_LISTEN="127.0.0.1",
            # No /metrics listener unless --scrape: it would hold port 9025.
            BUZON_HTTP_LISTEN="127.0.0.1" if self.http_port else "",
            BUZON_HTTP_PORT=str(self.http_port or 9025),
            BUZON_LOG_LEVEL="WARNING",
            BUZON_MAX_CONNECTIONS="60000",
            BUZON_FSYNC="true",  # as shipped; never benchmark without durability
            BUZON_WORKERS=str(self.workers),
        )
        cmd = [*PIN.server, sys.executable, "-m", "buzon", "-p", str(self.port),
               "-P", str(self.monitor_port), "-u", TOKEN, "-d", str(self.data)]
        self.cmd = cmd
        with open(self.base / "access.log", "wb") as out, \
                open(self.base / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=self.base, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
        self.root_pid = self.proc.pid
        try:
            wait_banner(self.port, lambda: self.proc.poll() is None)
        except RuntimeError:
            sys.stderr.write((self.base / "stderr.log").read_text(errors="replace")[-3000:])
            raise

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)


class Postfix(Server):
    name = "postfix"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mail = base / "mail"
        self.port = free_port()
        self.started = False

    def start(self) -> None:
        self.started = True
        out = subprocess.run(
            [*PIN.server, "bash", str(POSTFIX_SCRIPT), "start", str(self.base), str(self.port)],
            check=False, capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            raise RuntimeError(f"postfix-instance.sh start failed: {out.stderr.strip()}")
        self.root_pid = int(out.stdout.split()[-1])
        wait_banner(self.port, lambda: _stat(self.root_pid) is not None)

    def busy(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop"):
            for _, _, files in os.walk(self.base / "queue" / sub):
                if files:
                    return True
        return False

    def stop(self) -> None:
        if self.started:
            subprocess.run(["bash", str(POSTFIX_SCRIPT), "stop", str(self.base)],
                           check=False, capture_output=True, timeout=60)
            self.started = False

    @staticmethod
    def version() -> str | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["postconf", "-d", "-h", "mail_version"], check=False, capture_output=True,
                                 text=True, timeout=10)
            return out.stdout.strip() or None
        return None


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    workload: str
    server: str
    rep: int
    load: dict = field(default_factory=dict)
    cpu_s: float = 0.0
    cpu_ms_per_msg: float | None = None
    rss_mb: float = 0.0
    peak_connections: int | None = None
    loadgen_cpu_s: float = 0.0
    exit_code: int = 0
    scrapes: int | None = None


LOADGENS: list[subprocess.Popen] = []


class Scraper(threading.Thread):
    """GETs ``/metrics`` every ``interval`` s, as Prometheus would (``--scrape``)."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = f"http://127.0.0.1:{port}/metrics", interval
        self.done = self.failed = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
                self.done += 1
            except OSError:
                self.failed += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def settle(server: Server, limit: float = 15.0) -> None:
    """Wait until the server's queue is empty and its CPU stops moving (bounded)."""
    deadline = time.monotonic() + limit
    last = tree_usage(server.root_pid)[0]
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = tree_usage(server.root_pid)[0]
        if now - last <= 2 / TICK and not server.busy():
            return
        last = now


def run_one(w: Workload, server: Server, rep: int) -> Run:
    server.clear_mail()
    time.sleep(0.5)
    base = [*PIN.loadgen, sys.executable, "-m", "buzon.loadgen", "--host", "127.0.0.1", "--port",
            str(server.port), "--timeout", str(w.timeout), "--json"]
    if w.hold:
        # buzon-load splits itself over processes when the hold exceeds one process's
        # fd limit; the sampler counts the peak of server-side sessions to show that
        # they were all held at once.
        cmds = [base + ["--hold", str(w.hold), "--sources", "8", "--hold-for", "5"]]
    else:
        cmds = [base + ["--sessions", str(w.sessions), "--messages", str(w.messages), "--size",
                        str(w.size), "--maildir", str(server.mail)]]
    run = Run(w.name, server.name, rep)
    sampler = RssSampler(server.root_pid, server.port if w.hold else None)
    port = getattr(server, "http_port", None)
    scraper = Scraper(port, server.scrape) if port else None  # type: ignore[attr-defined]
    if scraper is not None:
        scraper.start()
    cpu0 = tree_usage(server.root_pid)[0]
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    for cmd in cmds:
        LOADGENS.append(subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True,
        ))
    parts: list[dict] = []
    deadline = time.monotonic() + w.timeout * 2 + 60
    for gen in LOADGENS:
        try:
            out, err = gen.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            gen.kill()
            out, err = gen.communicate()
        run.exit_code = max(run.exit_code, gen.returncode)
        try:
            parts.append(json.loads(out.decode().strip().splitlines()[-1]))
        except (IndexError, ValueError):
            parts.append({"ok": 0, "errors": 1, "first_errors": [
                f"buzon-load exit {gen.returncode}: {err.decode(errors='replace')[-400:]}"]})
    LOADGENS.clear()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.loadgen_cpu_s = round(kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime, 2)
    settle(server)
    cpu1 = tree_usage(server.root_pid)[0]
    if scraper is not None:
        scraper.stop()
        run.scrapes = scraper.done
        if scraper.failed:
            print(f"  /metrics: {scraper.failed} scrape(s) failed", flush=True)
    run.rss_mb = round(sampler.stop() / 2**20, 1)
    if w.hold:
        run.peak_connections = sampler.peak_conns
        run.load = parts[0]
        run.load["peak_connections"] = sampler.peak_conns
    else:
        run.load = parts[0]
    run.cpu_s = round(cpu1 - cpu0, 3)
    if run.load.get("ok") and not w.hold:
        run.cpu_ms_per_msg = round(run.cpu_s * 1000 / run.load["ok"], 3)
    return run


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(runs: list[Run]) -> dict:
    load = [r.load for r in runs]
    return {
        "runs": len(runs),
        "msgs_per_s": median([x.get("msgs_per_s") for x in load]),
        "delivered_per_s": median([x.get("delivered_per_s") for x in load]),
        "p50_ms": median([x.get("p50_ms") for x in load]),
        "p99_ms": median([x.get("p99_ms") for x in load]),
        "ok": median([x.get("ok") for x in load]),
        "errors": sum(int(x.get("errors") or 0) for x in load),
        "cpu_ms_per_msg": median([r.cpu_ms_per_msg for r in runs]),
        "rss_mb": max(r.rss_mb for r in runs),
        "peak_connections": max((r.peak_connections or 0) for r in runs) or None,
        "first_errors": [e for x in load for e in x.get("first_errors", [])][:5],
    }


def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def ratio(a, b) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def report(results: dict, workloads: list[Workload]) -> str:
    lines = [
        ("| workload | server | msgs/s (accepted) | delivered/s | p50 ms | p99 ms | errors "
         "| server CPU ms/msg | server RSS MB |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = [
        "| workload | msgs/s B/P | delivered/s B/P | p50 B/P | p99 B/P | CPU/msg B/P |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        per = results.get(w.name, {})
        for name in ("buzon", "postfix"):
            s = per.get(name)
            if not s:
                continue
            label = f"{w.name} ({w.what})"
            if w.hold:
                lines.append(
                    f"| {label} | {name} | – | – | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} "
                    f"| {s['errors']} (NOOP 250: {_fmt(s['ok'], 0)}; peak sessions "
                    f"{_fmt(s['peak_connections'], 0)}) | – | {_fmt(s['rss_mb'])} |"
                )
            else:
                lines.append(
                    f"| {label} | {name} | {_fmt(s['msgs_per_s'])} | {_fmt(s['delivered_per_s'])} "
                    f"| {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} | {s['errors']} "
                    f"| {_fmt(s['cpu_ms_per_msg'], 3)} | {_fmt(s['rss_mb'])} |"
                )
        b, p = per.get("buzon"), per.get("postfix")
        if b and p and not w.hold:
            cells = [ratio(b[k], p[k]) for k in
                     ("msgs_per_s", "delivered_per_s", "p50_ms", "p99_ms", "cpu_ms_per_msg")]
            ratios.append(f"| {w.name} | " + " | ".join(
                (f"{c:.2f}×" if c is not None else "–") for c in cells) + " |")
    text = "\n".join(lines)
    if len(ratios) > 2:
        text += "\n\nRatios Buzón/Postfix (medians):\n\n" + "\n".join(ratios)
    return text


def targets(results: dict, hold_target: int, hold_run: int | None) -> list[str]:
    """The issue's acceptance targets, checked against this run."""
    out = []

    def get(w: str, server: str) -> dict | None:
        return results.get(w, {}).get(server)

    for w in ("1k", "100k"):
        b, p = get(w, "buzon"), get(w, "postfix")
        if b and p:
            r = ratio(b["msgs_per_s"], p["msgs_per_s"])
            d = ratio(b["delivered_per_s"], p["delivered_per_s"])
            out.append(f"{w}: Buzón msgs/s ≥ 2× Postfix: accepted {r}× → "
                       f"{'PASS' if r and r >= 2 else 'FAIL'}; delivered into Maildirs {d}× → "
                       f"{'PASS' if d and d >= 2 else 'FAIL'}")
    for w in ("500", "2000"):
        b = get(w, "buzon")
        if b:
            out.append(f"{w} sessions: zero errors: {b['errors']} → "
                       f"{'PASS' if b['errors'] == 0 else 'FAIL'}")
    b = get("hold", "buzon")
    if b:
        ok = b["errors"] == 0 and (b["ok"] or 0) >= (hold_run or 0)
        line = (f"hold: {hold_target:,} idle sessions answer NOOP: ran {hold_run:,}: "
                f"{_fmt(b['ok'], 0)} answered, {b['errors']} errors, peak "
                f"{_fmt(b['peak_connections'], 0)} sessions → ")
        if hold_run is not None and hold_run < hold_target:
            line += (f"NOT MEASURED at {hold_target:,} (fd limit, see above); "
                     f"{'PASS' if ok else 'FAIL'} at {hold_run:,}")
        else:
            line += "PASS" if ok else "FAIL"
        out.append(line)
    b = get("1k", "buzon")
    if b and b["cpu_ms_per_msg"] is not None:
        out.append(f"1k: server CPU per message ≤ 0.6 ms: {b['cpu_ms_per_msg']:.3f} ms → "
                   f"{'PASS' if b['cpu_ms_per_msg'] <= 0.6 else 'FAIL'}")
    return out


def machine() -> dict:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                check=False, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": Postfix.version(),
        "buzon_commit": commit,
        "loadavg_at_start": [round(x, 2) for x in load],
    }


# --------------------------------------------------------------------------- main


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated workloads of: {','.join(WORKLOADS)}")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per workload")
    parser.add_argument("--quick", action="store_true", help="small smoke version")
    parser.add_argument("--no-postfix", action="store_true", help="Buzón only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--hold", type=int, metavar="N",
                        help="sessions for the hold workload (default 50,000; quick 2,000)")
    parser.add_argument("--scrape", type=float, metavar="SECONDS",
                        help="enable Buzón's HTTP listener and GET /metrics every SECONDS "
                             "during each run (the cost of being scraped)")
    parser.add_argument("--pin", action="store_true",
                        help="run the servers on CPU 0 and the load generator on CPU 1 "
                             "(taskset), so both servers get the same share")
    parser.add_argument("--messages", type=int, metavar="N",
                        help="messages per run of the sending workloads instead of their "
                             "own count (e.g. 150000 for a sustained minute of 1k)")
    parser.add_argument("--workers", type=int, default=1,
                        help="BUZON_WORKERS for the sending workloads (hold picks its own)")
    args = parser.parse_args(argv)

    print("command:", shlex.join(["python", *sys.argv]), flush=True)
    table = QUICK if args.quick else WORKLOADS
    names = args.only.split(",") if args.only else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(table)}")
    if args.repeat < 1:
        parser.error("--repeat must be ≥ 1")
    if os.geteuid() != 0:
        parser.error("run as root: the private Postfix and the fd limits need it")
    workloads = [table[n] for n in names]
    if args.pin:
        PIN.server, PIN.loadgen = ("taskset", "-c", "0"), ("taskset", "-c", "1")
    if args.messages:
        workloads = [dataclasses.replace(w, messages=args.messages,
                                         what=f"{w.what}, {args.messages:,} messages",
                                         timeout=max(w.timeout, args.messages / 200))
                     if w.messages else w for w in workloads]
    limit = nofile_limit()
    hold_target = args.hold or table["hold"].hold
    hold_run = hold_target
    notes: list[str] = []
    hold_workers = hold_workers_for(hold_target, limit)
    if "hold" in names:
        if hold_workers > 1:
            notes.append(
                f"hold: {hold_target:,} sessions do not fit one process's {limit:,} files "
                f"(RLIMIT_NOFILE hard limit here): Buzón runs with BUZON_WORKERS={hold_workers} "
                f"and the load generator is split over several processes."
            )
        workloads = [
            Workload("hold", f"{hold_run:,} idle sessions, then NOOP", hold=hold_run,
                     timeout=table["hold"].timeout, postfix=False) if w.name == "hold" else w
            for w in workloads
        ]
    for note in notes:
        print(note, flush=True)
    # SIGINT too: a shell may have started us with it ignored (background jobs).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    info = machine()
    info["nofile_limit"] = limit
    info["buzon_workers"] = args.workers
    info["buzon_workers_hold"] = hold_workers
    print("machine:", json.dumps(info), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="buzon-bench-"))
    tmp.chmod(0o755)  # Postfix's daemons and the vmail user must traverse it
    servers: list[Server] = []
    all_runs: list[Run] = []
    results: dict[str, dict[str, dict]] = {}
    status = 0
    try:
        for w in workloads:
            use_postfix = w.postfix and not args.no_postfix
            print(f"\n== {w.name}: {w.what}", flush=True)
            buzon = Buzon(tmp / w.name / "buzon", hold_workers if w.hold else args.workers,
                          args.scrape)
            (tmp / w.name / "buzon").mkdir(parents=True)
            servers.append(buzon)
            buzon.start()
            here: list[Server] = [buzon]
            if use_postfix:
                postfix = Postfix(tmp / w.name / "postfix")
                servers.append(postfix)
                postfix.start()
                here.append(postfix)
            runs: dict[str, list[Run]] = {s.name: [] for s in here}
            for rep in range(args.repeat):
                order = here if rep % 2 == 0 else list(reversed(here))
                for server in order:
                    run = run_one(w, server, rep)
                    all_runs.append(run)
                    runs[server.name].append(run)
                    x = run.load
                    print(f"  rep {rep + 1} {server.name:8} ok={x.get('ok')} "
                          f"errors={x.get('errors')} msgs/s={x.get('msgs_per_s')} "
                          f"delivered/s={x.get('delivered_per_s')} p50={x.get('p50_ms')} "
                          f"p99={x.get('p99_ms')} cpu={run.cpu_s}s "
                          f"({run.cpu_ms_per_msg} ms/msg) rss={run.rss_mb}MB "
                          f"gen_cpu={run.loadgen_cpu_s}s"
                          + (f" first_errors={x['first_errors'][:2]}" if x.get("first_errors")
                             else ""), flush=True)
            results[w.name] = {name: summarize(rs) for name, rs in runs.items()}
            for server in here:
                server.stop()
    except KeyboardInterrupt as why:
        print(f"\ninterrupted ({why}); cleaning up", file=sys.stderr)
        status = 130
    except Exception as error:  # noqa: BLE001 - report, clean up, fail
        print(f"\nbench failed: {error!r}; cleaning up", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for gen in LOADGENS:
            if gen.poll() is None:
                gen.kill()
                gen.wait(10)
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if results:
        print("\n" + report(results, workloads))
        checks = targets(results, hold_target, hold_run if "hold" in names else None)
        if checks:
            print("\nTargets (issue 6):")
            for line in checks:
                print("  " + line)
        print("\nNote: server CPU = utime+stime of the server's processes (Postfix: every "
              "process of the private instance), per accepted message; the load generator "
              "runs on the same machine.")
    if args.json:
        args.json.write_text(json.dumps({
            "command": shlex.join(["python", *sys.argv]),
            "machine": info,
            "repeat": args.repeat,
            "quick": args.quick,
            "workloads": {w.name: vars(w) for w in workloads},
            "results": results,
            "targets": targets(results, hold_target, hold_run if "hold" in names else None)
            if results else [],
            "notes": notes,
            "runs": [vars(r) for r in all_runs],
        }, indent=2, default=str) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
