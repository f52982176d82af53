"""aiosmtpd's ``SMTP``, changed only where a reply, a limit or a count must differ.

Theory of operation
-------------------
aiosmtpd runs one coroutine per connection that reads a line, dispatches
``smtp_<VERB>`` and awaits ``push(reply)``; that loop answers pipelined
commands in order for free. We change:

* ``push``: every reply passes :func:`buzon.smtp.replies.translate`, so
  aiosmtpd's bare replies get enhanced codes and SPEC §2 wording, and the bytes
  written are counted.
* ``data_received``: bytes read are counted; during DATA the time of the last
  byte is noted so the idle timer measures silence there (aiosmtpd resets it
  only per command, which would cut off a slow but live DATA transfer). In
  the command phase only a whole command counts, so a dripped line times out.
* ``_timeout_cb``: say ``421 4.4.2`` before closing (aiosmtpd just closes).
* ``_reset_timeout``: aiosmtpd cancels the idle timer and creates a new one for
  every command, 8% of the event loop's time per message (py-spy). We move a
  deadline instead; the one timer, if it fires before the deadline, re-arms
  itself for the rest.
* ``push``: the bytes of our constant replies are built once per process.
* ``smtp_DATA``: the body is read in large chunks (:mod:`buzon.smtp.dataread`)
  rather than line by line, under a deadline for the whole transfer.
* ``smtp_MAIL`` / ``smtp_RCPT``: parsed by the pure :mod:`buzon.smtp.syntax`
  (null sender accepted, seed error codes, SIZE, recipient limit, mailbox
  safety) instead of aiosmtpd's parser, which refuses ``MAIL FROM:<>``.
* ``eof_received``: a client that half-closes after pipelining its last
  commands (``cat msg | nc -q1``, the seed's own demo) still has them answered;
  aiosmtpd would cancel the session at once and drop what is buffered.
* HELO/EHLO are not required before MAIL, as in the seed and Postfix's default.

Everything else (DATA framing and dot-unstuffing, RSET, NOOP, QUIT, VRFY) is
aiosmtpd's, with our handler's hooks supplying the replies.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope

from buzon.accesslog import AccessLog
from buzon.metrics.counters import Counters
from buzon.net import format_peer
from buzon.smtp import dataread, replies
from buzon.smtp.replies import Reply
from buzon.smtp.syntax import SyntaxFault, parse_mail, parse_rcpt
from buzon.storage.mailbox import UnsafeMailbox, mailbox_name

__all__ = ["BuzonEnvelope", "BuzonSMTP", "Hub", "Limits", "refuse_busy"]

# Reply constant -> its line on the wire; only the constants of replies.py (a
# fixed set) go in, never lines with a queue id or a peer's words.
_WIRE: dict[Reply, bytes] = {}


def _wire(line: str) -> bytes:
    return (replies.translate(line) + "\r\n").encode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-session limits, from the settings."""

    hostname: str
    max_message_size: int
    max_recipients: int
    max_line_length: int
    idle_timeout: float
    data_timeout: float = 600.0


@dataclass(slots=True)
class Hub:
    """What all sessions share: counters, the access log, the open sessions."""

    limits: Limits
    counters: Counters
    access: AccessLog
    sessions: set[BuzonSMTP] = field(default_factory=set)
    stopping: bool = False


class BuzonEnvelope(Envelope):
    """aiosmtpd's envelope plus the vetted mailbox name of each recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.mailboxes: list[str] = []


class BuzonSMTP(SMTP):
    """One SMTP session."""

    def __init__(self, handler: Any, hub: Hub) -> None:
        limits = hub.limits
        super().__init__(
            handler,
            data_size_limit=limits.max_message_size,
            hostname=limits.hostname,
            ident="ESMTP",
            timeout=limits.idle_timeout,
            decode_data=False,
            enable_SMTPUTF8=False,
            loop=asyncio.get_running_loop(),
        )
        self.hub = hub
        # aiosmtpd keeps these limits on the class (shared by every session and
        # cleared by each new one); an instance copy keeps sessions independent.
        # Our setting counts the CRLF, aiosmtpd's check does not.
        self.command_size_limit = limits.max_line_length - 2
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self._last_activity = time.monotonic()
        self._started = self._last_activity
        self._peer = "?"
        self._counted = False
        self._in_data = False
        self._deadline = 0.0  # loop time when the session counts as idle
        self._timer_at: float | None = None  # when the armed idle timer fires

    # -- connection bookkeeping ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._peer = format_peer(transport.get_extra_info("peername"))
            self._counted = True
            self.hub.sessions.add(self)
            self.hub.counters.concurrent_connections += 1
            self.hub.access.connect(self._peer)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.hub.sessions.discard(self)
            self.hub.counters.concurrent_connections -= 1
            self.hub.access.disconnect(self._peer, time.monotonic() - self._started)
        super().connection_lost(error)

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        read_line = reader.readuntil

        async def readuntil(separator: bytes = b"\n") -> bytes:
            try:
                return await read_line(separator)
            except asyncio.IncompleteReadError:
                # EOF after the last complete line: end the session the way
                # aiosmtpd ends it on a reset (its handlers expect a cancel).
                raise asyncio.CancelledError from None

        reader.readuntil = readuntil  # type: ignore[method-assign]

    def eof_received(self) -> bool | None:
        # Feed EOF to the reader and keep the transport open for our replies; the
        # session ends when the reader runs dry (see _cb_client_connected).
        return asyncio.StreamReaderProtocol.eof_received(self)

    def data_received(self, data: bytes) -> None:
        self.hub.counters.bytes_transferred += len(data)
        if self._in_data:
            # In DATA any byte is progress (DATA has its own total deadline); in the
            # command phase only a whole command resets the timer (aiosmtpd does
            # that), so a command dripped a byte at a time still times out.
            self._last_activity = time.monotonic()
        super().data_received(data)

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def in_transaction(self) -> bool:
        """Between an accepted MAIL and the end of its DATA (or RSET)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def _create_envelope(self) -> BuzonEnvelope:
        return BuzonEnvelope()

    # -- replies -----------------------------------------------------------------------
    async def push(self, status: Any) -> None:
        if isinstance(status, Reply):
            data = _WIRE.get(status)
            if data is None:
                data = _WIRE[status] = _wire(str(status))
        elif isinstance(status, bytes):
            data = _wire(status.decode("ascii", "replace"))
        else:
            data = _wire(str(status))
        self.hub.counters.bytes_transferred += len(data)
        self._writer.write(data)
        await self._writer.drain()

    def say_and_close(self, line: str) -> None:
        """Send a final reply (421) without awaiting, then close; for timers and shutdown."""
        if self.transport is None or self.transport.is_closing():
            return
        data = (line + "\r\n").encode("ascii", "replace")
        self.hub.counters.bytes_transferred += len(data)
        self.transport.write(data)
        self.transport.close()

    def _reset_timeout(self, duration: float | None = None) -> None:
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        if self._timer_at is not None and self._timer_at <= self._deadline:
            return  # the armed timer fires first and re-arms for the rest
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._timer_at = self._deadline
        self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        self._timer_at = None
        left = self._deadline - self.loop.time()
        if left > 0.01:  # a command came since it was armed (timers run to the ms)
            self._reset_timeout(left)
            return
        if not self._in_data:
            self.say_and_close(replies.TIMEOUT.format(self.hostname))
            return
        idle = time.monotonic() - self._last_activity
        remaining = self._timeout_duration - idle
        if remaining > 0.05:
            # Bytes arrived since the timer was set (a long DATA): wait out the rest.
            self._reset_timeout(remaining)
            return
        self.say_and_close(replies.TIMEOUT.format(self.hostname))

    def _data_too_long(self) -> None:
        # The line is formatted only if it is sent, not once per message.
        self.say_and_close(replies.DATA_TIMEOUT.format(self.hostname))

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        await self.push(replies.DATA_GO)
        # The idle timer resets on every byte, so a client dripping one byte a
        # minute would hold its slot forever; DATA as a whole gets a deadline.
        timer = self.loop.call_later(self.hub.limits.data_timeout, self._data_too_long)
        limit = self.data_size_limit or 0
        self._in_data = True
        self._last_activity = time.monotonic()
        try:
            raw, too_big = await dataread.read_raw(self._reader, limit)
        except asyncio.IncompleteReadError:
            # The client went away mid-DATA: end the session quietly, nothing stored.
            raise asyncio.CancelledError from None
        finally:
            self._in_data = False
            timer.cancel()
            # The timer re-armed during DATA must not cut the next idle period short.
            self._reset_timeout()
        result = str(replies.TOO_BIG) if too_big else dataread.finish(raw, max_size=limit)
        if isinstance(result, str):
            self._set_post_data_state()
            await self.push(result)
            return
        self.envelope.content = self.envelope.original_content = result
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)
        self._reset_timeout()  # the idle period starts after the (maybe slow) queue write

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        return False

    # -- MAIL / RCPT (RFC 5321 §4.1.1.2-3) ---------------------------------------------------
    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802 (aiosmtpd's naming)
        assert self.envelope is not None and self.session is not None
        if self.hub.stopping:
            self.say_and_close(replies.SHUTTING_DOWN.format(self.hostname))
            return
        if self.envelope.mail_from is not None:
            await self.push(replies.NESTED_MAIL)
            return
        try:
            args = parse_mail(
                arg, extended=self.session.extended_smtp, max_size=self.data_size_limit or 0
            )
        except SyntaxFault as fault:
            await self.push(fault.reply)
            return
        self.envelope.mail_from = args.address
        self.envelope.mail_options.extend(f"{k}={v}" if v else k for k, v in args.params.items())
        await self.push(replies.MAIL_OK)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        envelope = self.envelope
        assert isinstance(envelope, BuzonEnvelope) and self.session is not None
        if envelope.mail_from is None:
            await self.push(replies.NEED_MAIL)
            return
        try:
            args = parse_rcpt(arg, extended=self.session.extended_smtp)
        except SyntaxFault as fault:
            await self.push(fault.reply)
            return
        if len(envelope.rcpt_tos) >= self.hub.limits.max_recipients:
            await self.push(replies.TOO_MANY_RECIPIENTS)
            return
        try:
            mailbox = mailbox_name(args.address)
        except UnsafeMailbox:
            await self.push(replies.UNSAFE_MAILBOX)
            return
        envelope.rcpt_tos.append(args.address)
        envelope.mailboxes.append(mailbox)
        await self.push(replies.RCPT_OK)


class _Busy(asyncio.Protocol):
    """Answers one connection over the limit with 421 and hangs up (RFC 5321 §3.8)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        line = replies.TOO_MANY_CONNECTIONS.format(self.hub.limits.hostname) + "\r\n"
        self.hub.counters.bytes_transferred += len(line)
        transport.write(line.encode("ascii"))
        transport.close()


def refuse_busy(hub: Hub) -> asyncio.Protocol:
    """The protocol for a connection that arrives when all session slots are taken."""
    return _Busy(hub)
