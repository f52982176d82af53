"""Shared machinery of the fault tests: a ledger of what the server acknowledged,
an asyncio SMTP sender that fills it, a Maildir reader, tmpfs mounts.

The ledger is the test's idea of the truth. Every message carries a unique
``X-Fault-Tag`` header; the sender records, per tag, the final reply to its
DATA: ``250 ... queued as <ID>`` (acked, with the queue id), a 4xx/5xx
(refused), or nothing at all because the connection died after the final dot
was written (in doubt: the server may or may not have queued it; a real client
would retry, RFC 5321 §6.1 accepts the duplicate). :func:`reconcile` then
reads every Maildir and checks: every acked message is there exactly once,
under a file name carrying its ``Q<id>R<n>``, with the very bytes sent;
nothing refused or never sent is there; only in-doubt messages may appear
without an ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import body_of_bytes, wait_for

from buzon.spool import record

HOST = "127.0.0.1"
_NAME = re.compile(r"^\d+\.Q([A-Z2-7]{16})R(\d+)\.")
_TAG = re.compile(rb"^X-Fault-Tag: (\S+)\r$", re.MULTILINE)


# --------------------------------------------------------------------------- ledger


@dataclass
class Message:
    tag: str
    mailbox: str
    body: bytes


@dataclass
class Ledger:
    """What the clients were told, message by message."""

    acked: dict[str, tuple[str, Message]] = field(default_factory=dict)
    """tag -> (queue id, message) for every final 250."""
    refused: dict[str, tuple[str, Message]] = field(default_factory=dict)
    """tag -> (reply line, message) for every final 4xx/5xx."""
    in_doubt: dict[str, Message] = field(default_factory=dict)
    """tag -> message whose final dot was written but whose reply never came."""
    unsent: int = 0
    """Messages a session never got to (it broke first)."""
    codes: Counter[str] = field(default_factory=Counter)
    """Every final reply's code, e.g. {'250 2.0.0': 180, '452 4.3.1': 12}."""
    errors: list[str] = field(default_factory=list)

    def record(self, message: Message, reply: str | None) -> None:
        if reply is None:
            self.in_doubt[message.tag] = message
            self.codes["(no reply)"] += 1
            return
        self.codes[reply_code(reply)] += 1
        if reply.startswith("250"):
            queue_id = reply.rsplit(" ", 1)[1]
            assert re.fullmatch(r"[A-Z2-7]{16}", queue_id), reply
            self.acked[message.tag] = (queue_id, message)
        else:
            self.refused[message.tag] = (reply, message)

    @property
    def acked_ids(self) -> set[str]:
        return {queue_id for queue_id, _ in self.acked.values()}

    def merge(self, other: Ledger) -> Ledger:
        """A ledger of both runs (their tags must differ)."""
        assert not set(self.acked) & set(other.acked)
        out = Ledger()
        for ledger in (self, other):
            out.acked.update(ledger.acked)
            out.refused.update(ledger.refused)
            out.in_doubt.update(ledger.in_doubt)
            out.unsent += ledger.unsent
            out.codes.update(ledger.codes)
            out.errors += ledger.errors
        return out


def reply_code(reply: str) -> str:
    match = re.match(r"(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3}))?", reply)
    assert match, f"not an SMTP reply: {reply!r}"
    return " ".join(g for g in match.groups() if g)


def make_body(tag: str, size: int) -> bytes:
    """A message of about ``size`` bytes, unique by its tag, ending in CRLF."""
    head = f"Subject: fault test {tag}\r\nX-Fault-Tag: {tag}\r\n\r\n".encode()
    line = f"{tag} the quick brown fox jumps over the lazy dog\r\n".encode()
    filler = line * max(1, (size - len(head)) // len(line))
    return head + filler


def dot_stuff(body: bytes) -> bytes:
    return re.sub(rb"(?m)^\.", b"..", body)


# --------------------------------------------------------------------------- sender


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        while True:
            raw = await self.reader.readuntil(b"\r\n")
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            if len(line) < 4 or line[3] != "-":
                return line

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def connect(port: int, host: str = HOST) -> _Conn:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    return _Conn(reader, writer)


_BROKEN = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


async def send_session(
    port: int, ledger: Ledger, messages: list[Message], *, stop: asyncio.Event | None = None,
) -> None:
    """Send ``messages`` over one session, recording each final reply in ``ledger``.

    A broken connection ends the session: the message whose dot was written is
    in doubt, the rest count as unsent. ``stop`` ends it cleanly between messages.
    """
    try:
        conn = await connect(port)
    except OSError as error:
        ledger.errors.append(f"connect: {error}")
        ledger.unsent += len(messages)
        return
    done = 0  # messages with an outcome in the ledger
    try:
        greeting = await conn.reply()
        if not greeting.startswith("220"):
            ledger.errors.append(f"greeting: {greeting}")
            return
        await conn.cmd("EHLO faults.test")
        for message in messages:
            if stop is not None and stop.is_set():
                break
            # One write for the envelope (PIPELINING is advertised), answers read in order.
            conn.writer.write(
                b"MAIL FROM:<sender@example.org>\r\n"
                + f"RCPT TO:<{message.mailbox}@example.org>\r\n".encode()
                + b"DATA\r\n"
            )
            replies = [await conn.reply() for _ in range(3)]
            if not replies[2].startswith("354"):
                # MAIL or RCPT refused (e.g. 421 while stopping): DATA had nothing to do.
                refusal = next(r for r in replies if not r.startswith("250"))
                ledger.record(message, refusal)
                done += 1
                if refusal.startswith("421"):
                    break
                await conn.cmd("RSET")
                continue
            conn.writer.write(dot_stuff(message.body) + b".\r\n")
            try:
                final = await conn.reply()
            except _BROKEN:
                ledger.record(message, None)
                done += 1
                raise
            ledger.record(message, final)
            done += 1
            if final.startswith("421"):
                break
        with contextlib.suppress(*_BROKEN):
            await conn.cmd("QUIT")
    except _BROKEN as error:
        ledger.errors.append(f"{type(error).__name__}: {error}")
    finally:
        ledger.unsent += len(messages) - done
        await conn.close()


async def send_load(
    port: int, ledger: Ledger, *, sessions: int, per_session: int, size: int,
    prefix: str, mailboxes: int = 10, stop: asyncio.Event | None = None,
) -> None:
    """``sessions`` concurrent sessions of ``per_session`` messages each."""
    batches = [
        [
            Message(f"{prefix}-{s}-{n}", f"{prefix}{(s + n) % mailboxes}",
                    make_body(f"{prefix}-{s}-{n}", size))
            for n in range(per_session)
        ]
        for s in range(sessions)
    ]
    await asyncio.gather(*(send_session(port, ledger, b, stop=stop) for b in batches))


# --------------------------------------------------------------------------- Maildirs


@dataclass
class Delivered:
    mailbox: str
    path: Path
    queue_id: str
    index: int
    tag: str | None
    body: bytes


def body_of(data: bytes) -> bytes:
    """A delivered file minus what Buzón prepends (trace fields, a missing Date/Message-ID)."""
    return body_of_bytes(data)


def _boxes(root: Path) -> list[Path]:
    """Every mailbox folder: ``root/<domain>/<local>`` (issue 12)."""
    if not root.exists():
        return []
    return sorted(box for domain in root.iterdir() if domain.is_dir() for box in domain.iterdir())


def delivered(root: Path) -> list[Delivered]:
    """Every message file in ``root/*/*/new`` and ``root/*/*/cur``, parsed."""
    found: list[Delivered] = []
    for box in _boxes(root):
        for sub in ("new", "cur"):
            folder = box / sub
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                match = _NAME.match(path.name)
                assert match, f"unexpected file name in a Maildir: {path}"
                body = body_of(path.read_bytes())
                tag = _TAG.search(body)
                found.append(Delivered(
                    box.name, path, match.group(1), int(match.group(2)),
                    tag.group(1).decode() if tag else None, body,
                ))
    return found


def count_files(root: Path) -> int:
    total = 0
    if root.exists():
        for box in _boxes(root):
            for sub in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    total += len(os.listdir(box / sub))
    return total


def leftovers(root: Path, sub: str = "tmp") -> list[Path]:
    """Files in every mailbox's ``tmp/`` (half-written deliveries)."""
    return sorted(p for box in _boxes(root) if (box / sub).is_dir() for p in (box / sub).iterdir())


@dataclass
class Reconciled:
    acked: int
    delivered: int
    in_doubt_delivered: int
    refused: int
    in_doubt: int

    def row(self) -> str:
        return (f"acked={self.acked} delivered={self.delivered} "
                f"(in-doubt delivered {self.in_doubt_delivered} of {self.in_doubt}) "
                f"refused={self.refused}")


def reconcile(
    ledger: Ledger, root: Path, *, allow_in_doubt: bool = False, complete: bool = True,
) -> Reconciled:
    """Check the Maildirs against the ledger; see the module docstring.

    ``complete=False`` (deliveries still pending) skips only the check that every
    acked message is already there.
    """
    files = delivered(root)
    by_tag: dict[str, list[Delivered]] = {}
    for f in files:
        assert f.tag is not None, f"delivered file without a test tag: {f.path}"
        by_tag.setdefault(f.tag, []).append(f)
    duplicates = {t: [str(f.path) for f in fs] for t, fs in by_tag.items() if len(fs) > 1}
    assert not duplicates, f"delivered more than once: {duplicates}"
    missing = sorted(t for t in ledger.acked if t not in by_tag)
    assert not complete or not missing, (
        f"{len(missing)} acked message(s) not delivered: {missing[:10]}")
    for tag, (queue_id, message) in ledger.acked.items():
        if tag not in by_tag:
            continue
        (f,) = by_tag[tag]
        assert f.queue_id == queue_id and f.index == 0, (
            f"{f.path.name} does not carry the acked id Q{queue_id}R0")
        assert f.mailbox == message.mailbox, f.path
        assert f.body == message.body, f"{f.path}: body differs from what was sent"
    refused_there = sorted(t for t in ledger.refused if t in by_tag)
    assert not refused_there, f"refused but delivered: {refused_there[:10]}"
    extra = sorted(set(by_tag) - set(ledger.acked) - set(ledger.refused))
    unexplained = [t for t in extra if t not in ledger.in_doubt]
    assert not unexplained, f"delivered but never sent or acked: {unexplained[:10]}"
    if not allow_in_doubt:
        assert not extra, f"delivered without a 250: {extra[:10]}"
    for tag in extra:
        (f,) = by_tag[tag]
        assert f.body == ledger.in_doubt[tag].body, f.path
    acked_ids = [q for q, _ in ledger.acked.values()]
    assert len(set(acked_ids)) == len(acked_ids), "a queue id was acked twice"
    return Reconciled(len(ledger.acked), len(files), len(extra), len(ledger.refused),
                      len(ledger.in_doubt))


# --------------------------------------------------------------------------- spool


def parse_segment(path: Path) -> list[str]:
    """The queue ids in one queue segment; AssertionError if it does not parse whole.

    Reads through the spool's own codec, so the fault tests check the format the
    server writes rather than a second copy of it.
    """
    records, fault = record.parse_segment(path.read_bytes())
    assert fault is None, f"{path}: {fault}"
    return [envelope.queue_id for _, envelope in records]


def queued_ids(spool: Path) -> list[str]:
    """Queue ids of every message in ``spool/queue`` (every segment must parse)."""
    folder = spool / "queue"
    return [i for p in sorted(folder.iterdir()) for i in parse_segment(p)] if folder.exists() else []


# --------------------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], object], timeout: float) -> bool:
    """:func:`helpers.wait_for` as a bool: True once ``predicate`` holds within ``timeout``."""
    return bool(wait_for(predicate, timeout))


# --------------------------------------------------------------------------- tmpfs


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root; this test must run there)")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block; always unmounted after."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    assert done.returncode == 0, f"mount failed: {done.stderr}"
    try:
        yield path
    finally:
        # umount fails with EBUSY while a file on it is still open: retry until it succeeds.
        if not wait_for(lambda: _run("umount", str(path)).returncode == 0, timeout=5):
            # still busy (a leaked descriptor): detach it so nothing stays mounted
            _run("umount", "-l", str(path))
            pytest.fail(f"{path} was still busy at unmount; lazily detached")


def remount(path: Path, options: str, timeout: float = 10.0) -> None:
    """``mount -o remount,<options>``, retried while a file is open for writing (EBUSY)."""
    tries: list[subprocess.CompletedProcess[str]] = []

    def remounted() -> bool:
        tries.append(_run("mount", "-o", f"remount,{options}", str(path)))
        return tries[-1].returncode == 0

    if not wait_for(remounted, timeout):
        raise AssertionError(f"remount,{options} of {path} failed: {tries[-1].stderr}")
