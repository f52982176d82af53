"""The send mode: sessions, message bodies, the size mix, deferrals.

Theory of operation
-------------------
Each session connects, says ``EHLO``, and takes messages from a shared
:class:`_Source` until it is done: a count of messages (``--messages``) or a
deadline (``--duration``: no new message starts after it, the one being sent
is finished). Message sizes come from a :class:`SizePicker`, in the order the
messages are taken, so one seed always gives the same sequence of sizes.

A body is a header block that changes per message (its number, zero-padded so
every body of a size has exactly that size) and a tail cached once per size:
a 2 MB body costs a 54-byte header per message, not 2 MB of new bytes. Large
tails are written in 256 KB slices with ``drain()`` between them, so 100
sessions sending 10 MB each hold a few MB in their transports, not 1 GB.

Replies: see the package docstring. :func:`_transact` returns ``None`` for an
accepted message or a :class:`_Refused` for a deferral; anything else raises
``ValueError`` and ends the session.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from buzon.loadgen.result import LoadResult

__all__ = ["Bodies", "SizePicker", "parse_mix", "run_send"]

_LINE = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n"
_SLICE = 256 * 1024
_SESSION_ERRORS = (OSError, ValueError, asyncio.IncompleteReadError)


def parse_mix(text: str) -> list[tuple[int, float]]:
    """``"4096:70,102400:25,2097152:5"`` → ``[(4096, 70.0), (102400, 25.0), (2097152, 5.0)]``.

    Raises:
        ValueError: a part is not ``SIZE:WEIGHT``, a size is below 1, a weight is
            negative, or every weight is 0.
    """
    mix = []
    for part in text.split(","):
        size, sep, weight = part.strip().partition(":")
        if not sep:
            raise ValueError(f"{part!r}: expected SIZE:WEIGHT")
        pair = (int(size), float(weight))
        if pair[0] < 1 or pair[1] < 0:
            raise ValueError(f"{part!r}: size must be ≥ 1 and weight ≥ 0")
        mix.append(pair)
    if not mix or sum(w for _, w in mix) <= 0:
        raise ValueError(f"{text!r}: no positive weight")
    return mix


class SizePicker:
    """Message sizes by weight, one after the other, the same sequence for one seed."""

    def __init__(self, mix: list[tuple[int, float]], seed: int = 1) -> None:
        self.sizes = [size for size, _ in mix]
        self.weights = [weight for _, weight in mix]
        self._rng = random.Random(seed)

    def next(self) -> int:
        if len(self.sizes) == 1:
            return self.sizes[0]
        return self._rng.choices(self.sizes, self.weights)[0]


class Bodies:
    """Message bodies: a per-message header block plus a tail cached per size."""

    def __init__(self) -> None:
        self._tails: dict[int, bytes] = {}

    @staticmethod
    def head(n: int) -> bytes:
        return b"Subject: load %010d\r\nFrom: <load@example.org>\r\n\r\n" % n

    def parts(self, size: int, n: int) -> tuple[bytes, bytes]:
        """(head, tail) of message ``n``: ``size`` bytes, then the end-of-data ``.CRLF``."""
        head = self.head(n)
        tail = self._tails.get(size)
        if tail is None:
            want = max(0, size - len(head) - 2)
            filler = (_LINE * (want // len(_LINE) + 1))[:want]
            # the end-of-data dot must start a line
            tail = self._tails[size] = filler + b"\r\n.\r\n"
        return head, tail


@dataclass(frozen=True)
class _Refused:
    line: str
    """The 4xx reply, e.g. ``452 4.5.3 Error: too many recipients``."""
    closed: bool
    """The connection cannot be used any more (a 421, or DATA already begun)."""


class _Source:
    """Which message comes next, shared by the sessions: a count or a deadline."""

    def __init__(self, messages: int, deadline: float | None, sizes: SizePicker) -> None:
        self.remaining, self.deadline, self.sizes, self.taken = messages, deadline, sizes, 0

    def done(self) -> bool:
        if self.deadline is not None:
            return time.perf_counter() >= self.deadline
        return self.remaining <= 0

    def take(self) -> tuple[int, int] | None:
        """(number, size) of the next message, or None when there is none."""
        if self.done():
            return None
        self.remaining -= 1
        self.taken += 1
        return self.taken, self.sizes.next()


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        while True:
            line = (await self.reader.readuntil(b"\r\n")).decode("ascii", "replace")
            if len(line) < 4 or line[3] != "-":
                return line.rstrip("\r\n")

    async def expect(self, prefix: str) -> None:
        line = await self.reply()
        if not line.startswith(prefix):
            raise ValueError(f"expected {prefix}, got {line!r}")

    def close(self) -> None:
        self.writer.close()


async def _connect(host: str, port: int, source: str | None = None) -> _Session:
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local, limit=1 << 16)
    return _Session(reader, writer)


def _unexpected(line: str, expected: str) -> ValueError:
    return ValueError(f"expected {expected}, got {line!r}")


async def _open(host: str, port: int) -> _Session | _Refused:
    """A session past its greeting and ``EHLO``, or the 4xx that refused it."""
    s = await _connect(host, port)
    try:
        for command, expected in ((None, "220"), (b"EHLO loadgen\r\n", "250")):
            if command:
                s.writer.write(command)
            line = await s.reply()
            if line.startswith(expected):
                continue
            if line.startswith("4"):
                s.close()
                return _Refused(line, True)
            raise _unexpected(line, expected)
    except BaseException:
        s.close()
        raise
    return s


async def _send_body(s: _Session, head: bytes, tail: bytes) -> None:
    if len(tail) <= _SLICE:
        s.writer.write(head + tail)
        return
    s.writer.write(head)
    with memoryview(tail) as view:
        for at in range(0, len(view), _SLICE):
            s.writer.write(view[at:at + _SLICE])
            await s.writer.drain()


async def _transact(
    s: _Session, envelope: list[bytes], head: bytes, tail: bytes, pipelining: bool
) -> _Refused | None:
    """One message: None when accepted, the deferral otherwise (ValueError: anything else)."""
    expects = ["250"] * (len(envelope) - 1) + ["354"]
    refused: str | None = None
    if pipelining:
        s.writer.write(b"".join(envelope))
        for expected in expects:
            line = await s.reply()
            if line.startswith(expected):
                continue
            if line.startswith("421"):
                return _Refused(line, True)  # the server closes: read nothing more
            if line.startswith("4"):
                refused = refused or line
            elif refused is None:  # after a deferral, a 503 to DATA is its consequence
                raise _unexpected(line, expected)
        if refused is not None:
            if line.startswith("354"):  # DATA began: only closing abandons it
                return _Refused(refused, True)
            s.writer.write(b"RSET\r\n")
            await s.expect("250")
            return _Refused(refused, False)
    else:
        for command, expected in zip(envelope, expects):
            s.writer.write(command)
            line = await s.reply()
            if line.startswith(expected):
                continue
            if line.startswith("4"):
                if line.startswith("421"):
                    return _Refused(line, True)
                s.writer.write(b"RSET\r\n")
                await s.expect("250")
                return _Refused(line, False)
            raise _unexpected(line, expected)
    await _send_body(s, head, tail)
    line = await s.reply()
    if line.startswith("250"):
        return None
    if line.startswith("4"):  # the transaction is over either way
        return _Refused(line, line.startswith("421"))
    raise _unexpected(line, "250")


async def run_send(
    host: str, port: int, *, sessions: int, messages: int = 0, size: int = 1024, rcpts: int = 1,
    pipelining: bool = False, timeout: float = 300.0, rcpt_domain: str = "example.org",
    mailboxes: int = 100, duration: float | None = None,
    mix: list[tuple[int, float]] | None = None, seed: int = 1, pause: float = 0.1,
) -> LoadResult:
    """Send ``messages`` messages, or for ``duration`` seconds, over ``sessions`` sessions.

    Args:
        mix: (size, weight) pairs; None: every message has ``size`` bytes.
        seed: fixes the sequence of sizes drawn from ``mix``.
        pause: seconds a session waits after a deferral before its next message.

    Returns:
        The run's :class:`LoadResult` (``sent`` counts accepted messages).
    """
    result = LoadResult("send", sessions, duration=duration)
    bodies = Bodies()
    result.begin()
    deadline = result.started + duration if duration is not None else None
    source = _Source(messages, deadline, SizePicker(mix or [(size, 1.0)], seed))

    async def one_session(index: int) -> None:
        s: _Session | None = None
        try:
            while not source.done():
                if s is None:
                    opened = await _open(host, port)
                    if isinstance(opened, _Refused):
                        result.refusal(opened.line)
                        await asyncio.sleep(pause)
                        continue
                    s = opened
                taken = source.take()
                if taken is None:
                    break
                n, message_size = taken
                envelope = [b"MAIL FROM:<load@example.org>\r\n"] + [
                    f"RCPT TO:<user{(n + k) % mailboxes}@{rcpt_domain}>\r\n".encode()
                    for k in range(rcpts)
                ] + [b"DATA\r\n"]
                head, tail = bodies.parts(message_size, n)
                began = time.perf_counter()
                refused = await _transact(s, envelope, head, tail, pipelining)
                if refused is None:
                    now = time.perf_counter()
                    result.accepted(message_size, now - began, now)
                    continue
                result.refusal(refused.line)
                if refused.closed:
                    s.close()
                    s = None
                await asyncio.sleep(pause)
            if s is not None:
                s.writer.write(b"QUIT\r\n")
                await s.expect("221")
        except _SESSION_ERRORS as error:
            result.error(f"session {index}: {error}")
        finally:
            if s is not None:
                s.close()

    tasks = [asyncio.create_task(one_session(i)) for i in range(sessions)]
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    result.seconds = time.perf_counter() - result.started
    if duration is None and source.remaining > 0:
        result.errors += source.remaining  # messages no session was left to send
    if pending:
        result.error(f"{len(pending)} sessions still running at the {timeout}s timeout")
    return result
