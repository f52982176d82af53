"""Test helpers: a raw SMTP line client, an in-process server runner, a subprocess runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from buzon.app.server import Server
from buzon.config import ServerSettings, load_server_settings

REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LineClient:
    """A bare SMTP client over a real socket: send raw bytes, read whole replies."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; buffered {self._buf!r}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One whole reply (multi-line joined by newlines), e.g. '250 2.1.0 Ok'."""
        lines = []
        while True:
            line = self._line().decode()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server has closed the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self._buf += data
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def code(reply: str) -> str:
    """The first line's basic and enhanced code: '250 2.1.0'."""
    match = re.match(r"(\d{3})(?:[ -](\d\.\d+\.\d+))?", reply)
    assert match, reply
    return " ".join(g for g in match.groups() if g)


def settings_for(tmp: Path, **overrides: Any) -> ServerSettings:
    base: dict[str, Any] = dict(
        smtp_listen="127.0.0.1,::1",
        smtp_port=0,
        monitor_listen="127.0.0.1",
        monitor_port=0,
        http_port=0,  # a free port: servers of parallel tests never share 9025
        data_dir=tmp / "data",
        hostname="mx.test",
        monitor_token="t0k3n-ok",
        shutdown_grace=2.0,
        retry_backoff=0.1,
    )
    base.update(overrides)
    return load_server_settings([], **base)


class RunningServer:
    """A real Server on its own event loop in a background thread."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.server = Server(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def go() -> None:
            try:
                await self.server.startup()
            except BaseException as error:  # report start-up failure to the test
                self._error = error
                self._started.set()
                raise
            self._started.set()
            try:
                await self.server._stop.wait()
            finally:
                await self.server.shutdown()

        try:
            self.loop.run_until_complete(go())
        except BaseException:
            pass
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def start(self) -> RunningServer:
        self._thread.start()
        if not self._started.wait(15):
            raise TimeoutError("server did not start in 15 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.request_stop()
            self._thread.join(30)
            assert not self._thread.is_alive(), "server did not stop in 30 s"

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_idle(self, timeout: float = 30.0) -> None:
        assert self.server.delivery is not None
        self.call(asyncio.wait_for(self.server.delivery.wait_idle(), timeout), timeout + 5)

    @property
    def port(self) -> int:
        return self.server.smtp_addresses[0][1]

    @property
    def monitor_port(self) -> int:
        return self.server.monitor_addresses[0][1]

    @property
    def mail_root(self) -> Path:
        return self.settings.mail_dir


class ServerProcess:
    """``python -m buzon`` as a real child process (crash and signal tests)."""

    def __init__(self, data_dir: Path, port: int, *extra: str, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = port
        self.monitor_port = free_port(socket.SOCK_DGRAM)
        self.args = [
            sys.executable, "-m", "buzon", "-p", str(port), "-P", str(self.monitor_port),
            "-u", "t0k3n-ok", "-d", str(data_dir), *extra,
        ]
        self.env = {
            **os.environ,
            "BUZON_SMTP_LISTEN": "127.0.0.1",
            "BUZON_MONITOR_LISTEN": "127.0.0.1",
            "BUZON_HTTP_PORT": "0",
            "BUZON_HOSTNAME": "mx.test",
            "BUZON_RETRY_BACKOFF": "0.1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{port}.log"

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.log, "ab")
        since = handle.tell()  # the log is appended to across restarts: read this start's part
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=handle, stderr=handle)
        handle.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()}")
            # Ready when the start line is logged: it comes after every listener is bound.
            # With BUZON_WORKERS the SMTP port answers (the workers') before the supervisor
            # has bound the monitor and the HTTP listener.
            with open(self.log, "rb") as log:
                log.seek(since)
                if b"buzon started," not in log.read():
                    time.sleep(0.05)
                    continue
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=1
            ) as probe:
                probe.recv(100)
                return self
            time.sleep(0.05)
        raise TimeoutError(f"server did not listen in 15 s: {self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def server_process(*args: Any, **kwargs: Any) -> Iterator[ServerProcess]:
    proc = ServerProcess(*args, **kwargs)
    try:
        yield proc.start()
    finally:
        proc.ensure_stopped()


@contextlib.contextmanager
def tac_sidecar(work: Path, key_file: Path) -> Iterator[int]:
    """A transform sidecar running ``tac``, rooted at the work area ``work``: its port,
    once it listens on 127.0.0.1; stopped afterwards."""
    port = free_port()
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "buzon.transform.sidecar", "--listen", "127.0.0.1",
         "--port", str(port), "--root", str(work), "--key-file", str(key_file), "--", "tac"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: listening(port))
        yield port
    finally:
        sidecar.terminate()
        sidecar.wait(20)


def maildir_files(root: Path, mailbox: str) -> list[Path]:
    """Messages in ``new/`` and ``cur/`` of a mailbox: ``domain/local``, or a bare local
    part, looked for in every domain folder (``<root>/<domain>/<local>``, issue 12)."""
    folders = [root / mailbox] if "/" in mailbox else sorted(root.glob(f"*/{mailbox}"))
    return sorted(f for folder in folders for sub in ("new", "cur") for f in (folder / sub).glob("*"))


def _tac(data: bytes) -> bytes:
    """The lines of ``data`` (each ending in LF) in reverse order, as tac(1) writes them."""
    lines = data.split(b"\n")
    tail = lines.pop()
    return tail + b"".join(line + b"\n" for line in reversed(lines))


def body_of(path: Path, *, headerless: bool = False, tac: bool = False) -> bytes:
    """A delivered file minus what Buzón prepends: the message as the client sent it.

    Buzón prepends ``Received:`` (folded), and ``Date:``/``Message-ID:`` when the
    message had none, when it queues the message, and ``Return-Path:`` and
    ``Delivered-To:`` when it delivers it. ``Date:``/``Message-ID:`` are recognised as
    Buzón's by their values (the Received date, ``<queue id@``). A message without a
    header block also got an empty line before it: ``headerless=True`` takes it off.
    ``tac=True``: the message went through ``tac``, which reversed the queued lines,
    Buzón's fields included; they are found and taken off all the same.
    """
    data = path.read_bytes()
    if tac:
        head = re.match(rb"Return-Path: [^\r\n]*\r\nDelivered-To: [^\r\n]*\r\n", data)
        assert head, data[:300]
        return _tac(body_of_bytes(data[: head.end()] + _tac(data[head.end():]), headerless))
    return body_of_bytes(data, headerless)


def body_of_bytes(data: bytes, headerless: bool = False) -> bytes:
    """:func:`body_of` for a delivered file's bytes."""
    match = re.match(
        rb"Return-Path: [^\r\n]*\r\nDelivered-To: [^\r\n]*\r\n"
        # the failure policy's header goes in front of the queued message: kept
        rb"(?P<extra>(?:X-Buzon-Transform: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)?)"
        rb"Received: from [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*?"
        rb"\tby [^\r\n]* id (?P<id>[A-Z2-7]{16})[^\r\n]*\r\n\t(?:for <[^\r\n]*>; )?(?P<date>[^\r\n]*)\r\n",
        data,
    )
    assert match, data[:400]
    rest = data[match.end():]
    rest = rest.removeprefix(b"Date: " + match["date"] + b"\r\n")
    if rest.startswith(b"Message-ID: <" + match["id"] + b"@"):
        rest = rest.split(b"\r\n", 1)[1]
    if headerless:
        assert rest.startswith(b"\r\n"), rest[:100]
        rest = rest[2:]
    return match["extra"] + rest


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``predicate`` until it is truthy or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.02)


def wait_until(what: str, predicate: Callable[[], Any], timeout: float,
               interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {value!r})")
        time.sleep(interval)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def child_pids(parent: int) -> set[int]:
    """The live (not zombie) children of ``parent``, read from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                found.add(int(entry))
    return found


def spool_drained(data_dir: Path) -> bool:
    """True when no queue segment is left in any spool shard (every message delivered).

    A segment leaves ``queue/`` only once all its messages are delivered, so after
    this no further delivery (and no duplicate) can happen.
    """
    spool = data_dir / "spool"
    return not any(
        any(queue.iterdir()) for queue in [spool / "queue", *spool.glob("w*/queue")] if queue.is_dir()
    )
