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

Sustained runs (``--duration S``): the sending workloads send for S seconds
instead of a message count. Besides accepted/s and delivered/s (until the last
file is in ``new/``), the harness counts the files in ``new/`` itself at the
window's start + 5 s and at its end: the *sustained delivered rate*, delivered
during that span divided by it.

Soak (``--only soak``): 100 sessions for ``--soak-minutes`` (10) with mixed sizes,
Buzón then Postfix, never both at once. At the end of every minute the harness
removes and counts what reached ``new/`` and samples the server tree's RSS and
open descriptors (and Buzón's ``buzon_queue_depth`` from /metrics); the rows and
the verdict rules are in ``benchlib/soak.py``.

Big messages (``--only 10m``): 100 sessions send one 10 MB message each at the
same time; the server tree's RSS is sampled every 0.1 s.

With ``--pin`` this process (which counts files and samples ``/proc``) runs on
CPU 1 with the load generator, the servers on CPU 0.

Every process it starts is stopped by pid, and the temporary directories
removed, on success, failure, Ctrl-C or SIGTERM. Traffic goes to 127.0.0.x only.

Run as root (Postfix's private instance and the file-descriptor limits need it):
    python scripts/bench.py                      # every workload, 3 repetitions
    python scripts/bench.py --only 1k,100k --repeat 3 --json bench.json
    python scripts/bench.py --quick              # a small smoke run (~1 minute)
    python scripts/bench.py --only 1k,100k --duration 60 --pin --repeat 3
    python scripts/bench.py --only soak --pin    # 10 min Buzón, then 10 min Postfix
    python scripts/bench.py --only 10m --pin
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

from benchlib.soak import Sample, minute_rows, soak_table, soak_verdict, verdict_lines, window_rate

from buzon.loadgen import DeliveryCounter

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
    kind: str = "send"
    """send (a count, or --duration), hold, soak (per-minute rows), big (RSS every 0.1 s)."""
    duration: float = 0.0
    """Seconds of sending instead of ``messages`` (``--duration``; the soak's minutes)."""
    mix: str = ""
    """``buzon-load --mix``: sizes drawn by weight instead of ``size``."""
    sample: float = 1.0
    """Seconds between two RSS samples of the server tree."""
    minute: int = 60
    """Seconds in one of the soak's "minutes" (shorter only for smoke runs and tests)."""


SOAK_MIX = "4096:70,102400:25,2097152:5"
# The soak's generator sends this many seconds past the last minute, so the last
# sample (RSS, descriptors) is taken under load, not while the sessions close.
SOAK_TAIL = 2
# 10 MB in decimal: under both servers' default message size limit (10,240,000).
BIG = 10_000_000
# Run only when named in --only: they are long (soak) or about memory, not speed.
EXTRA = {
    "soak": Workload("soak", "100 sessions, 70 % 4 KB / 25 % 100 KB / 5 % 2 MB", 100,
                     kind="soak", duration=600.0, mix=SOAK_MIX, timeout=900.0),
    "10m": Workload("10m", "one 10 MB message on each of 100 sessions at once", 100, 100, BIG,
                    timeout=600.0, kind="big", sample=0.1),
}
QUICK_EXTRA = {
    "soak": Workload("soak", "20 sessions, 70 % 4 KB / 25 % 100 KB / 5 % 2 MB (quick)", 20,
                     kind="soak", duration=60.0, mix=SOAK_MIX, timeout=300.0),
    "10m": Workload("10m", "one 10 MB message on each of 10 sessions (quick)", 10, 10, BIG,
                    timeout=120.0, kind="big", sample=0.1),
}

WORKLOADS = {
    "1k": Workload("1k", "1 KB, 100 sessions", 100, 5000, 1024),
    "100k": Workload("100k", "100 KB, 100 sessions", 100, 1000, 100 * 1024),
    "500": Workload("500", "1 KB, 500 sessions", 500, 2500, 1024),
    "2000": Workload("2000", "1 KB, 2,000 sessions", 2000, 4000, 1024, timeout=600.0),
    # Postfix runs one smtpd process per session: 50,000 processes are not a fair
    # or bounded test of it, so hold is Buzón only.
    "hold": Workload("hold", "50,000 idle sessions, then NOOP", hold=50_000, timeout=600.0,
                     postfix=False, kind="hold"),
}
QUICK = {
    "1k": Workload("1k", "1 KB, 20 sessions (quick)", 20, 400, 1024, timeout=60.0),
    "100k": Workload("100k", "100 KB, 20 sessions (quick)", 20, 100, 100 * 1024, timeout=60.0),
    "500": Workload("500", "1 KB, 50 sessions (quick)", 50, 200, 1024, timeout=60.0),
    "2000": Workload("2000", "1 KB, 200 sessions (quick)", 200, 400, 1024, timeout=60.0),
    "hold": Workload("hold", "2,000 idle sessions (quick)", hold=2000, timeout=60.0,
                     postfix=False, kind="hold"),
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


def tree_fds(root: int) -> int:
    """Open descriptors of ``root``'s live process tree (entries of each /proc/<pid>/fd)."""
    total = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


class RssSampler(threading.Thread):
    """Samples a process tree's RSS every ``interval`` s; ``peak`` is the largest sum.

    With ``port``, also the peak number of established connections to it.
    """

    def __init__(self, root: int, port: int | None = None, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root, self.port, self.peak, self.peak_conns = root, port, 0, 0
        self.interval = interval
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, tree_usage(self.root)[1])
                if self.port:
                    self.peak_conns = max(self.peak_conns, established(self.port))
            self._halt.wait(self.interval)

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


def forget_deletions() -> None:
    """Flush, then drop the clean page cache, so the files just removed cost the next run nothing.

    On ext4 without a journal (this machine's disk), creating a file steps over every
    inode freed in the last 60 s, 300 s while its inode-table block is dirty, for as
    long as that block is in the buffer cache (fs/ext4/ialloc.c, recently_deleted()).
    Removing the previous run's 100,000-odd files therefore made the next run's file
    creations slower by a varying amount: identical runs of the same build gave 0.24
    and 0.58 ms of server CPU per 1 KB message, depending on which one followed a
    removal. After sync the blocks are clean, and dropping the clean page cache takes
    them out of the buffer cache, where recently_deleted() no longer looks. Best
    effort: without root (or in a container) the runs keep the effect, and say so.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("1\n")
    except OSError as error:
        print(f"note: cannot drop the page cache ({error}); runs after a removal of many "
              "files may be slower on ext4 without a journal", file=sys.stderr)


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
        forget_deletions()

    def busy(self) -> bool:
        """Work still queued (checked before the CPU reading after a run)."""
        return False


class Buzon(Server):
    name = "buzon"

    def __init__(self, base: Path, workers: int = 1, scrape: float | None = None,
                 http: bool = False) -> None:
        self.base = base
        self.workers = workers
        self.scrape = scrape
        self.http_port = free_port() if scrape or http else None
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
            # No /metrics listener unless --scrape or the soak: it would hold port 9025.
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

    def queue_depth(self) -> float | None:
        """``buzon_queue_depth`` from /metrics, or None when the listener is off or silent."""
        if not self.http_port:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics",
                                        timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        values = [float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith(("buzon_queue_depth ", "buzon_queue_depth{"))]
        return sum(values) if values else None

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
    sustained_per_s: float | None = None
    """Files that reached new/ per second from the window's start + 5 s to its end."""
    window: dict | None = None
    minutes: list[dict] | None = None
    """The soak's per-minute rows (benchlib.soak.minute_rows)."""
    verdict: dict | None = None
    drain: dict | None = None


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


def _loadgen(cmd: list[str]) -> subprocess.Popen:
    """Start one buzon-load; unbuffered, so its announce line can be read before the end."""
    gen = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True, bufsize=0,
    )
    LOADGENS.append(gen)
    return gen


def _announced(gen: subprocess.Popen) -> float:
    """The wall-clock time buzon-load began sending (its ``--announce`` line), or now."""
    line = gen.stdout.readline() if gen.stdout else b""
    try:
        return float(json.loads(line)["started_at"])
    except (ValueError, KeyError, TypeError):
        return time.time()


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def _collect(deadline: float) -> tuple[list[dict], int]:
    """Wait for every buzon-load started (until ``deadline``, monotonic); their summaries."""
    parts: list[dict] = []
    status = 0
    for gen in LOADGENS:
        try:
            out, err = gen.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            gen.kill()
            out, err = gen.communicate()
        status = max(status, gen.returncode)
        try:
            parts.append(json.loads(out.decode().strip().splitlines()[-1]))
        except (IndexError, ValueError):
            parts.append({"ok": 0, "errors": 1, "first_errors": [
                f"buzon-load exit {gen.returncode}: {err.decode(errors='replace')[-400:]}"]})
    LOADGENS.clear()
    return parts, status


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
        amount = (["--duration", f"{w.duration:g}", "--announce"] if w.duration
                  else ["--messages", str(w.messages)])
        cmds = [base + ["--sessions", str(w.sessions), *amount, "--size", str(w.size),
                        "--maildir", str(server.mail)]]
    run = Run(w.name, server.name, rep)
    sampler = RssSampler(server.root_pid, server.port if w.hold else None, w.sample)
    port = getattr(server, "http_port", None)
    interval = getattr(server, "scrape", None)
    scraper = Scraper(port, interval) if port and interval else None
    if scraper is not None:
        scraper.start()
    cpu0 = tree_usage(server.root_pid)[0]
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    gens = [_loadgen(cmd) for cmd in cmds]
    if w.duration:
        # The sustained window, counted here (on CPU 1 with --pin), on the generator's clock.
        counter = DeliveryCounter(server.mail)
        t0 = _announced(gens[0])
        skip = min(5.0, w.duration / 2)
        _sleep_until(t0 + skip)
        first, first_at = counter.count(), time.time()
        _sleep_until(t0 + w.duration)
        last, last_at = counter.count(), time.time()
        run.window = {"from_s": skip, "to_s": w.duration, "first": first, "last": last,
                      "span_s": round(last_at - first_at, 3)}
        run.sustained_per_s = window_rate(first, last, last_at - first_at)
    parts, run.exit_code = _collect(time.monotonic() + w.timeout * 2 + 60)
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
    run.load = parts[0]
    if w.hold:
        run.peak_connections = sampler.peak_conns
        run.load["peak_connections"] = sampler.peak_conns
    run.cpu_s = round(cpu1 - cpu0, 3)
    if run.load.get("ok") and not w.hold:
        run.cpu_ms_per_msg = round(run.cpu_s * 1000 / run.load["ok"], 3)
    return run


def run_soak(w: Workload, server: Server) -> Run:
    """One soak run: per-minute samples while buzon-load sends for ``w.duration`` s."""
    server.clear_mail()
    time.sleep(0.5)
    minutes = max(1, round(w.duration / w.minute))
    counter = DeliveryCounter(server.mail)
    cmd = [*PIN.loadgen, sys.executable, "-m", "buzon.loadgen", "--host", "127.0.0.1", "--port",
           str(server.port), "--timeout", str(w.timeout), "--json", "--announce",
           "--sessions", str(w.sessions), "--duration", f"{minutes * w.minute + SOAK_TAIL}",
           "--mix", w.mix,
           "--seed", "1"]
    run = Run(w.name, server.name, 0)
    sampler = RssSampler(server.root_pid)
    cpu0 = tree_usage(server.root_pid)[0]
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    gen = _loadgen(cmd)
    t0 = _announced(gen)
    samples = []
    for minute in range(1, minutes + 1):
        _sleep_until(t0 + w.minute * minute)
        # The gauge first, then the count (names listed, then removed): both as near
        # the minute's end as they can be.
        queue = server.queue_depth() if isinstance(server, Buzon) else None
        at = time.time()
        delivered = counter.sweep()
        rss = tree_usage(server.root_pid)[1]
        samples.append(Sample(at, delivered, rss, tree_fds(server.root_pid), queue))
        row = minute_rows([], samples, t0, w.minute)[-1]  # accepted: known at the end
        print(f"    minute {minute}: delivered/s={row['delivered_per_s']} rss={row['rss_mb']}MB "
              f"fds={row['fds']} buzon_queue_depth={queue}", flush=True)
    parts, run.exit_code = _collect(time.monotonic() + w.timeout + 60)
    run.load = parts[0]
    # What was accepted in the last message's finishing time, and everything queued,
    # is still to come: wait for it (bounded), counting on.
    accepted = int(run.load.get("ok") or 0)
    delivered = sum(s.delivered for s in samples)
    end = t0 + w.minute * minutes
    drain_deadline = time.time() + 300
    last_seen = end
    while delivered < accepted and time.time() < drain_deadline:
        time.sleep(0.5)
        got = counter.sweep()
        if got:
            delivered += got
            last_seen = time.time()
    timeline = list(run.load.get("timeline") or [])
    run.minutes = minute_rows(timeline, samples, t0, w.minute)
    run.verdict = soak_verdict(run.minutes)
    run.drain = {"accepted": accepted, "delivered": delivered,
                 "late_accepted": sum(timeline[w.minute * minutes:]),
                 "seconds": round(max(0.0, last_seen - end), 1), "complete": delivered >= accepted}
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.loadgen_cpu_s = round(kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime, 2)
    settle(server)
    run.cpu_s = round(tree_usage(server.root_pid)[0] - cpu0, 3)
    if accepted:
        run.cpu_ms_per_msg = round(run.cpu_s * 1000 / accepted, 3)
    run.rss_mb = round(sampler.stop() / 2**20, 1)
    return run


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _sum_refused(load: list[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for x in load:
        for code, n in (x.get("refused") or {}).items():
            total[code] = total.get(code, 0) + n
    return dict(sorted(total.items()))


def summarize(runs: list[Run]) -> dict:
    load = [r.load for r in runs]
    return {
        "runs": len(runs),
        "msgs_per_s": median([x.get("msgs_per_s") for x in load]),
        "delivered_per_s": median([x.get("delivered_per_s") for x in load]),
        "p50_ms": median([x.get("p50_ms") for x in load]),
        "p99_ms": median([x.get("p99_ms") for x in load]),
        "sustained_per_s": median([r.sustained_per_s for r in runs]),
        "ok": median([x.get("ok") for x in load]),
        "delivered": median([x.get("delivered") for x in load]),
        "errors": sum(int(x.get("errors") or 0) for x in load),
        "refused": _sum_refused(load),
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


def _refused_cell(refused: dict | None) -> str:
    return ", ".join(f"{code}: {n:,}" for code, n in (refused or {}).items()) or "0"


def report(results: dict, workloads: list[Workload]) -> str:
    sustained = any(s.get("sustained_per_s") is not None
                    for per in results.values() for s in per.values())
    if sustained:
        return sustained_report(results, workloads)
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
            if not s or w.kind == "soak":
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
        if b and p and w.kind in ("send", "big"):
            cells = [ratio(b[k], p[k]) for k in
                     ("msgs_per_s", "delivered_per_s", "p50_ms", "p99_ms", "cpu_ms_per_msg")]
            ratios.append(f"| {w.name} | " + " | ".join(
                (f"{c:.2f}×" if c is not None else "–") for c in cells) + " |")
    text = "\n".join(lines) if len(lines) > 2 else ""
    if len(ratios) > 2:
        text += "\n\nRatios Buzón/Postfix (medians):\n\n" + "\n".join(ratios)
    return text


def sustained_report(results: dict, workloads: list[Workload]) -> str:
    """The table of a ``--duration`` run: the sustained rate and the refusals added."""
    lines = [
        ("| workload | server | accepted/s | delivered/s (to the last file) | sustained "
         "delivered/s (window) | p50 ms | p99 ms | errors | refused (4xx) | server CPU ms/msg "
         "| server RSS MB |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    ratios = [
        "| workload | accepted/s B/P | delivered/s B/P | sustained B/P | CPU/msg B/P |",
        "|---|---:|---:|---:|---:|",
    ]
    for w in workloads:
        per = results.get(w.name, {})
        if w.kind != "send":
            continue
        for name in ("buzon", "postfix"):
            s = per.get(name)
            if s:
                lines.append(
                    f"| {w.name} ({w.what}) | {name} | {_fmt(s['msgs_per_s'])} "
                    f"| {_fmt(s['delivered_per_s'])} | {_fmt(s['sustained_per_s'])} "
                    f"| {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} | {s['errors']} "
                    f"| {_refused_cell(s.get('refused'))} | {_fmt(s['cpu_ms_per_msg'], 3)} "
                    f"| {_fmt(s['rss_mb'])} |")
        b, p = per.get("buzon"), per.get("postfix")
        if b and p:
            cells = [ratio(b[k], p[k]) for k in
                     ("msgs_per_s", "delivered_per_s", "sustained_per_s", "cpu_ms_per_msg")]
            ratios.append(f"| {w.name} | " + " | ".join(
                (f"{c:.2f}×" if c is not None else "–") for c in cells) + " |")
    text = "\n".join(lines)
    if len(ratios) > 2:
        text += "\n\nRatios Buzón/Postfix (medians):\n\n" + "\n".join(ratios)
    return text


def big_lines(results: dict, workloads: list[Workload]) -> list[str]:
    """One line per server for the 10 MB workload: peak RSS, accepted, delivered."""
    out = []
    for w in workloads:
        if w.kind != "big":
            continue
        for name, s in results.get(w.name, {}).items():
            whole = s["ok"] == w.messages and s["delivered"] == w.messages and not s["errors"]
            out.append(
                f"{w.name} {name}: peak RSS {_fmt(s['rss_mb'])} MB (server tree, sampled every "
                f"{w.sample:g} s); accepted {_fmt(s['ok'], 0)} of {w.messages}, delivered "
                f"{_fmt(s['delivered'], 0)}, refused {_refused_cell(s.get('refused'))}, errors "
                f"{s['errors']} → {'all accepted and delivered' if whole else 'NOT ALL'}")
    return out


def targets16(results: dict, workloads: list[Workload]) -> list[str]:
    """Issue 16's targets, for what this run measured."""
    out = []

    def get(w: str, server: str) -> dict | None:
        return results.get(w, {}).get(server)

    for w in ("1k", "100k"):
        b, p = get(w, "buzon"), get(w, "postfix")
        if b and p and b.get("sustained_per_s") is not None:
            d = ratio(b["delivered_per_s"], p["delivered_per_s"])
            out.append(f"{w}: Buzón delivered/s ≥ 4× Postfix: {d}× → "
                       f"{'PASS' if d and d >= 4 else 'FAIL'}")
        if b and b.get("sustained_per_s") is not None and b["msgs_per_s"]:
            r = ratio(b["sustained_per_s"], b["msgs_per_s"])
            out.append(f"{w}: Buzón sustained delivered/s within 10 % of accepted/s: "
                       f"{_fmt(b['sustained_per_s'])} / {_fmt(b['msgs_per_s'])} = {r} → "
                       f"{'PASS' if r is not None and abs(r - 1) <= 0.10 else 'FAIL'}")
    b = get("1k", "buzon")
    if b and b.get("sustained_per_s") is not None and b["cpu_ms_per_msg"] is not None:
        out.append(f"1k: server CPU per message ≤ 0.35 ms: {b['cpu_ms_per_msg']:.3f} ms → "
                   f"{'PASS' if b['cpu_ms_per_msg'] <= 0.35 else 'FAIL'}")
    b = get("10m", "buzon")
    big = next((w for w in workloads if w.name == "10m"), None)
    if b and big:
        verdict = "PASS" if b["rss_mb"] <= 200 else "FAIL"
        if big.sessions != 100:
            verdict = f"not measured (the target is for 100 sessions, this ran {big.sessions})"
        out.append(f"10m: 100 concurrent 10 MB messages, Buzón peak RSS ≤ 200 MB: "
                   f"{_fmt(b['rss_mb'])} MB → {verdict}")
    for name in ("buzon", "postfix"):
        s = get("soak", name)
        if s and s.get("verdict"):
            out.extend(verdict_lines(name, s["verdict"]))
    return out


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


def soak_all(w: Workload, tmp: Path, args: argparse.Namespace, use_postfix: bool,
             servers: list[Server], all_runs: list[Run]) -> dict[str, dict]:
    """The soak against Buzón, then against Postfix: each server started, soaked, stopped."""
    out: dict[str, dict] = {}
    makers = [("buzon", lambda: Buzon(tmp / w.name / "buzon", args.workers, http=True))]
    if use_postfix:
        makers.append(("postfix", lambda: Postfix(tmp / w.name / "postfix")))
    for name, make in makers:
        (tmp / w.name / name).mkdir(parents=True, exist_ok=name == "postfix")
        server = make()
        servers.append(server)
        server.start()
        print(f"  {name}: {w.what}", flush=True)
        run = run_soak(w, server)
        server.stop()
        all_runs.append(run)
        x = run.load
        print(f"  {name:8} ok={x.get('ok')} errors={x.get('errors')} refused={x.get('refused')} "
              f"msgs/s={x.get('msgs_per_s')} cpu={run.cpu_s}s ({run.cpu_ms_per_msg} ms/msg) "
              f"rss={run.rss_mb}MB gen_cpu={run.loadgen_cpu_s}s"
              + (f" first_errors={x['first_errors'][:2]}" if x.get("first_errors") else ""),
              flush=True)
        out[name] = {**summarize([run]), "minutes": run.minutes, "verdict": run.verdict,
                     "drain": run.drain}
    return out


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated workloads of: "
                        f"{','.join([*WORKLOADS, *EXTRA])} (default: {','.join(WORKLOADS)})")
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
                             "(taskset), so both servers get the same share; this harness "
                             "(file counts, /proc samples) moves to CPU 1 too")
    parser.add_argument("--messages", type=int, metavar="N",
                        help="messages per run of the sending workloads instead of their "
                             "own count (e.g. 150000 for a sustained minute of 1k)")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="seconds of sending per run of the sending workloads instead of "
                             "a message count (e.g. 60), with the sustained window rate")
    parser.add_argument("--soak-minutes", type=int, default=None, metavar="N",
                        help="minutes of the soak workload (default 10; quick 1)")
    parser.add_argument("--soak-minute", type=int, default=60, metavar="S",
                        help="seconds per soak 'minute' row (default 60; less only for a "
                             "smoke run of the harness itself)")
    parser.add_argument("--workers", type=int, default=1,
                        help="BUZON_WORKERS for the sending workloads (hold picks its own)")
    args = parser.parse_args(argv)

    print("command:", shlex.join(["python", *sys.argv]), flush=True)
    default = QUICK if args.quick else WORKLOADS
    table = {**default, **(QUICK_EXTRA if args.quick else EXTRA)}
    names = args.only.split(",") if args.only else list(default)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(table)}")
    if args.messages and args.duration:
        parser.error("--messages and --duration exclude each other")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    if args.soak_minutes is not None and args.soak_minutes < 1:
        parser.error("--soak-minutes must be ≥ 1")
    if args.repeat < 1:
        parser.error("--repeat must be ≥ 1")
    if os.geteuid() != 0:
        parser.error("run as root: the private Postfix and the fd limits need it")
    workloads = [table[n] for n in names]
    if args.pin:
        PIN.server, PIN.loadgen = ("taskset", "-c", "0"), ("taskset", "-c", "1")
        # This process counts files and samples /proc during the runs: on the
        # generator's core, not the server's.
        os.sched_setaffinity(0, {1})
    sending = [w for w in workloads if w.kind == "send"]
    if args.messages:
        workloads = [dataclasses.replace(w, messages=args.messages,
                                         what=f"{w.what}, {args.messages:,} messages",
                                         timeout=max(w.timeout, args.messages / 200))
                     if w in sending else w for w in workloads]
    if args.duration:
        workloads = [dataclasses.replace(w, duration=args.duration,
                                         what=f"{w.what}, {args.duration:g} s",
                                         timeout=max(w.timeout, args.duration + 240))
                     if w in sending else w for w in workloads]
    if args.soak_minute < 1:
        parser.error("--soak-minute must be ≥ 1")
    for w in [w for w in workloads if w.kind == "soak"]:
        minutes = args.soak_minutes or round(w.duration / 60)
        unit = "min" if args.soak_minute == 60 else f"× {args.soak_minute} s"
        workloads[workloads.index(w)] = dataclasses.replace(
            w, duration=float(minutes * args.soak_minute), minute=args.soak_minute,
            what=f"{w.what}, {minutes} {unit}", timeout=minutes * args.soak_minute + 300.0)
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
                     timeout=table["hold"].timeout, postfix=False, kind="hold")
            if w.name == "hold" else w
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
            if w.kind == "soak":
                results[w.name] = soak_all(w, tmp, args, use_postfix, servers, all_runs)
                continue
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
        table = report(results, workloads)
        if table:
            print("\n" + table)
        for w in workloads:
            for name, s in results.get(w.name, {}).items():
                if w.kind == "soak" and s.get("minutes") is not None:
                    print("\n" + soak_table(name, s["minutes"], s.get("drain")))
        for line in big_lines(results, workloads):
            print("\n" + line)
        checks = targets(results, hold_target, hold_run if "hold" in names else None)
        if checks:
            print("\nTargets (issue 6):")
            for line in checks:
                print("  " + line)
        checks = targets16(results, workloads)
        if checks:
            print("\nTargets (issue 16):")
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
            "targets16": targets16(results, workloads) if results else [],
            "notes": notes,
            "runs": [vars(r) for r in all_runs],
        }, indent=2, default=str) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
