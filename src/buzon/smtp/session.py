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
* ``smtp_DATA`` (:mod:`buzon.smtp.transfer`): the body is read in large chunks
  (:mod:`buzon.smtp.dataread`) rather than line by line, under a deadline for
  the whole transfer and a reservation from the shared memory budget.
* ``smtp_MAIL`` / ``smtp_RCPT`` (:mod:`buzon.smtp.transaction`): parsed by the
  pure :mod:`buzon.smtp.syntax` (null sender accepted, seed error codes, SIZE,
  recipient limit, mailbox safety) instead of aiosmtpd's parser, which refuses
  ``MAIL FROM:<>``.
* ``eof_received``: a client that half-closes after pipelining its last
  commands (``cat msg | nc -q1``, the seed's own demo) still has them answered;
  aiosmtpd would cancel the session at once and drop what is buffered.
* Refusals (:mod:`buzon.smtp.refusals`): every 4xx/5xx reply to a command is
  an access-log line with its verb, code and the envelope so far.
* HELO/EHLO are not required before MAIL, as in the seed and Postfix's default;
  a HELO/EHLO name with a control character gets ``501 5.5.2``.
* ``smtp_HELP`` answers ``214`` with the commands that exist; ``AUTH`` is taken
  out of the command table (an unknown command) until authentication exists.
* Fair shares (:mod:`buzon.smtp.admission`): sessions per client address,
  messages and lifetime per session, DATA bytes in memory across sessions.
* TLS (:mod:`buzon.smtp.starttls`): STARTTLS with the certificate current when
  the client asks, implicit TLS, one count per handshake; the second
  ``connection_made`` after the handshake finds ``self.transport`` set, so the
  connection is neither admitted nor counted again.
* Ends: a closing connection whose client does not read is aborted after a
  grace; an ended session drops its unread bytes and cuts its reference
  cycles, so an aborted DATA is freed at once, not by the cycle collector.

Everything else (DATA framing and dot-unstuffing, RSET, NOOP, QUIT, VRFY) is
aiosmtpd's, with our handler's hooks supplying the replies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from buzon.accesslog import AccessLog
from buzon.directory import accept_all
from buzon.metrics.counters import Counters
from buzon.net import format_peer
from buzon.smtp import replies
from buzon.smtp.admission import Clients, MemoryBudget, hang_up, refuse
from buzon.smtp.commands import Commands, drop_auth
from buzon.smtp.refusals import Refusals
from buzon.smtp.replies import Reply
from buzon.smtp.starttls import StartTls
from buzon.smtp.transaction import BuzonEnvelope, Transaction
from buzon.smtp.transfer import DataTransfer

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
    max_sessions_per_client: int = 50
    client_limit_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_messages_per_session: int = 1000
    session_lifetime: float = 3600.0
    data_memory_budget: int = 256 << 20
    require_tls: bool = False  # MAIL refused (530 5.7.0) before STARTTLS


@dataclass(slots=True)
class Hub:
    """What all sessions share: counters, the access log, the open sessions, fair shares."""

    limits: Limits
    counters: Counters
    access: AccessLog
    sessions: set[BuzonSMTP] = field(default_factory=set)
    stopping: bool = False
    tls: Any = None  # buzon.tls.ServerTls: STARTTLS offered when set
    # buzon.directory.Recipients (or a Directory): who RCPT accepts; None: every address.
    recipients: Any = None
    clients: Clients = field(init=False)
    budget: MemoryBudget = field(init=False)

    def __post_init__(self) -> None:
        exempt = tuple(ipaddress.ip_network(n) for n in self.limits.client_limit_exempt)
        self.clients = Clients(self.limits.max_sessions_per_client, exempt)
        self.budget = MemoryBudget(self.limits.data_memory_budget)
        if self.recipients is None:
            self.recipients = accept_all(self.limits.hostname)


class BuzonSMTP(StartTls, Commands, Transaction, DataTransfer, Refusals):
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
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
            tls_context=None if hub.tls is None else hub.tls.context,
            require_starttls=limits.require_tls,
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
        self._client = ""  # the key counted in hub.clients
        self._lost = False
        self._messages = 0  # accepted in this session
        self._expired = False  # past session_lifetime: no new transaction
        self._lifetime: asyncio.TimerHandle | None = None
        self._held = 0  # bytes of hub.budget this session's DATA holds
        drop_auth(self._smtp_methods)

    # -- connection bookkeeping ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        hub = self.hub
        if first:
            peername = transport.get_extra_info("peername")
            key = hub.clients.admit(peername)
            if key is None:
                # Past the per-client cap: answered like a connection over the limit.
                line = replies.TOO_MANY_FROM_CLIENT.format(hub.limits.hostname)
                refuse(line, hub.counters).connection_made(transport)
                return
            self._client = key
        super().connection_made(transport)
        if first:
            self._peer = format_peer(peername)
            self._counted = True
            hub.sessions.add(self)
            hub.counters.concurrent_connections += 1
            hub.access.connect(self._peer)
            self._lifetime = self.loop.call_later(hub.limits.session_lifetime, self._too_old)
            assert self._handler_coroutine is not None
            self._handler_coroutine.add_done_callback(self._ended)

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is None:  # refused in connection_made: no session was started
            self._cut_cycles()
            return
        self._lost = True
        if self._counted:
            self._counted = False
            self.hub.sessions.discard(self)
            self.hub.clients.leave(self._client)
            self.hub.counters.concurrent_connections -= 1
            self.hub.access.disconnect(self._peer, time.monotonic() - self._started)
        if self._lifetime is not None:
            self._lifetime.cancel()
        super().connection_lost(error)
        if error is not None:  # kept by the reader; its frames hold the transport
            error.__traceback__ = None
        # Unread bytes (an aborted DATA body) are freed now, whatever still refers
        # to the reader until the session's task has unwound.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        self._forget()

    def _ended(self, task: asyncio.Task[None]) -> None:
        # A cancelled task keeps its CancelledError, whose traceback holds frames
        # that hold this protocol, which holds the task: taking it out cuts the cycle.
        if task.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
        self._forget()

    def _forget(self) -> None:
        """Once the connection is lost and the task over, cut the references that loop.

        aiosmtpd's tables of bound methods, its limits' closure, the writer and our
        reader wrapper each refer back to their owner; cut, the session is freed by
        reference counting alone.
        """
        task = self._handler_coroutine
        if not (self._lost and task is not None and task.done()):
            return
        self._cut_cycles()
        self._reader.__dict__.pop("readuntil", None)
        self._writer = None  # type: ignore[assignment]
        if not task.cancelled() and task.exception() is not None:
            self._handler_coroutine = None  # its traceback holds this protocol

    def _cut_cycles(self) -> None:
        self._smtp_methods.clear()
        self._auth_methods.clear()
        self._client_connected_cb = None
        self.command_size_limits = collections.defaultdict(int)

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
        if data[0] in b"45":  # a refusal (rare): logged with its command
            self._refused(data)
        self._writer.write(data)
        await self._writer.drain()

    def say_and_close(self, line: str) -> None:
        """Send a final reply (421) without awaiting, then close; for timers and shutdown.

        A client that does not read its replies cannot keep the connection open:
        the transport is aborted after a short grace (issue 11, finding 4).
        """
        transport: Any = self.transport
        if transport is None:
            return
        if transport.is_closing():  # closed after QUIT, maybe still flushing: bound it
            hang_up(transport, self.loop)
            return
        data = (line + "\r\n").encode("ascii", "replace")
        self.hub.counters.bytes_transferred += len(data)
        self._refused(data)  # a 421 to a command (MAIL, DATA); none from a timer between them
        transport.write(data)
        hang_up(transport, self.loop)

    def _too_old(self) -> None:
        """``session_lifetime`` is over: 421 now, or once the transaction in flight ends."""
        self._lifetime = None
        if self._expired or not (self._in_data or self.in_transaction):
            self.say_and_close(replies.SESSION_TOO_LONG.format(self.hostname))
            return
        # A transaction in flight gets up to data_timeout more to finish.
        self._expired = True
        self._lifetime = self.loop.call_later(self.hub.limits.data_timeout, self._too_old)

    def _reset_timeout(self, duration: float | None = None) -> None:
        if self._lost:
            return  # a timer would keep the ended session (and its buffers) alive
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

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        return False


def refuse_busy(hub: Hub) -> asyncio.Protocol:
    """The protocol for a connection that arrives when all session slots are taken."""
    return refuse(replies.TOO_MANY_CONNECTIONS.format(hub.limits.hostname), hub.counters)
