"""The durable spool: a message is on disk before it is acknowledged (SPEC §3).

Theory of operation
-------------------
Layout under ``<data_dir>/spool``::

    incoming/<id>   being written; never trusted (removed at start-up)
    queue/<id>      complete: one JSON envelope line, then the message bytes
    work/<id>.*     transform input and outputs of a queued message

``store`` writes ``incoming/<id>``, flushes it, renames it into ``queue/`` and
flushes ``queue/``; only then may the SMTP side answer ``250 ... queued as
<id>``. The rename is the commit point: after a crash a message is either
wholly in ``queue/`` (and will be delivered) or absent (and the client, which
never saw 250, still has it). ``remove`` needs no flush: a removal lost in a
crash resurrects a message whose recipients the delivery worker then finds
already delivered (see :mod:`buzon.storage.maildir`), so it is not sent twice.

Queue ids are 16 base-32 characters: a 48-bit millisecond clock then 32 random
bits, so they sort by arrival and do not collide across hosts sharing a volume.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Envelope", "Spool", "SpoolCorrupt", "new_queue_id"]

_MAGIC = b"BUZON1 "


class SpoolCorrupt(ValueError):
    """A queue file that does not parse; it is moved aside, never deleted."""


def new_queue_id(now: float | None = None) -> str:
    """A sortable, collision-resistant queue id (16 characters of base 32)."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    raw = millis.to_bytes(6, "big") + secrets.token_bytes(4)
    return base64.b32encode(raw).decode("ascii").rstrip("=")


@dataclass(slots=True)
class Envelope:
    """What SMTP said about a message, stored in front of it in the queue file."""

    queue_id: str
    sender: str
    recipients: list[str]
    mailboxes: list[str]
    """Vetted mailbox name of each recipient, same order."""
    helo: str | None = None
    peer: str = ""
    esmtp: bool = False
    received: float = field(default_factory=time.time)
    size: int = 0

    def encode(self) -> bytes:
        return _MAGIC + json.dumps(asdict(self), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Envelope:
        if not line.startswith(_MAGIC):
            raise SpoolCorrupt("missing header")
        try:
            data = json.loads(line[len(_MAGIC):])
            return cls(**data)
        except (ValueError, TypeError) as error:
            raise SpoolCorrupt(str(error)) from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """File operations on the spool; blocking, so callers run them in a thread."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.incoming = root / "incoming"
        self.queue = root / "queue"
        self.work = root / "work"
        self.corrupt = root / "corrupt"
        for path in (self.incoming, self.queue, self.work, self.corrupt):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def store(self, envelope: Envelope, content: bytes) -> None:
        """Write a message durably into ``queue/``.

        Raises:
            OSError: disk full (ENOSPC), read-only (EROFS), ...: nothing is left in
                ``queue/`` and the partial file is removed.
        """
        tmp = self.incoming / envelope.queue_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                for part in (envelope.encode(), content):
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.queue / envelope.queue_id)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.fsync:
            _fsync_dir(self.queue)

    def load(self, queue_id: str) -> tuple[Envelope, bytes]:
        """Read a queued message back: its envelope and its bytes.

        Raises:
            SpoolCorrupt: the file has no valid envelope line.
            FileNotFoundError: no such message.
        """
        data = (self.queue / queue_id).read_bytes()
        end = data.find(b"\n")
        if end < 0:
            raise SpoolCorrupt("no envelope line")
        return Envelope.decode(data[: end + 1]), data[end + 1:]

    def quarantine(self, queue_id: str) -> Path:
        """Move an unreadable queue file to ``corrupt/`` for a human to look at."""
        target = self.corrupt / queue_id
        os.replace(self.queue / queue_id, target)
        return target

    def work_path(self, queue_id: str, suffix: str) -> Path:
        return self.work / f"{queue_id}.{suffix}"

    def remove(self, queue_id: str) -> None:
        """Forget a delivered message and its transform files."""
        try:
            os.unlink(self.queue / queue_id)
        except FileNotFoundError:
            pass
        for path in self.work.glob(f"{queue_id}.*"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def recover(self) -> list[str]:
        """At start-up: drop half-written files, return queued ids oldest first."""
        for path in self.incoming.iterdir():
            path.unlink(missing_ok=True)
        return sorted(p.name for p in self.queue.iterdir() if not p.name.startswith("."))
