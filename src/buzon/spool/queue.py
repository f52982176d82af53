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
from collections.abc import Sequence
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
        """Write one message durably into ``queue/`` (see :meth:`store_many`)."""
        (result,) = self.store_many([(envelope, content)])
        if result is not None:
            raise result

    def store_many(self, items: Sequence[tuple[Envelope, bytes]]) -> list[OSError | None]:
        """Write messages durably into ``queue/``, sharing one flush of the directory.

        Each file is written under ``incoming/``, flushed and renamed into
        ``queue/``; then ``queue/`` is flushed once for the whole batch, after
        which every rename is durable.

        Returns:
            For each item, None when it is safely queued, else the OSError (disk
            full, read-only file system...) — and then nothing of it is left in
            ``queue/``.
        """
        results: list[OSError | None] = []
        renamed: list[Path] = []
        for envelope, content in items:
            tmp = self.incoming / envelope.queue_id
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    _write_all(fd, envelope.encode())
                    _write_all(fd, content)
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                final = self.queue / envelope.queue_id
                os.rename(tmp, final)
            except OSError as error:
                _unlink_quietly(tmp)
                results.append(error)
                continue
            renamed.append(final)
            results.append(None)
        if renamed and self.fsync:
            try:
                _fsync_dir(self.queue)
            except OSError as error:
                # Durability of the renames is unknown: refuse them all (4xx), and
                # take the files back so they are not delivered behind a refusal.
                for path in renamed:
                    _unlink_quietly(path)
                return [error if r is None else r for r in results]
        return results

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
        """Forget a delivered message and its transform input and output."""
        _unlink_quietly(self.queue / queue_id)
        for suffix in ("in", "out"):
            _unlink_quietly(self.work / f"{queue_id}.{suffix}")

    def recover(self) -> list[str]:
        """At start-up: drop half-written files, return queued ids oldest first."""
        for path in self.incoming.iterdir():
            path.unlink(missing_ok=True)
        return sorted(p.name for p in self.queue.iterdir() if not p.name.startswith("."))
