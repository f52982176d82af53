"""The aiosmtpd handler: hooks that return reply lines and hand messages to the spool.

Each hook validates, delegates and returns a constant from
:mod:`buzon.smtp.replies`. ``handle_DATA`` is the durability boundary: it
returns ``250 ... queued as <id>`` only after :meth:`buzon.spool.Intake.store`
has flushed the message to disk, and a failing disk becomes a 4xx, never a 5xx,
so the client keeps the message and retries (SPEC §2, issue 6).

Before the message is queued it gets our ``Received:`` field
(:mod:`buzon.smtp.trace`), and ``Date:``/``Message-ID:`` if it lacks them, with a
header block readers can find (:mod:`buzon.smtp.headers`): the queued message is
what every transform and reader sees. The client's DNS name for ``Received:``
is looked up (:mod:`buzon.smtp.reverse`) from the greeting on, while the
envelope is sent.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from typing import Any

from buzon.smtp import headers, replies, trace
from buzon.smtp.reverse import UNKNOWN, ReverseDns
from buzon.smtp.session import BuzonEnvelope, BuzonSMTP
from buzon.spool import Envelope, Intake, QueueFull, SpilledBody, new_queue_id

__all__ = ["Handler", "MessageRules"]

log = logging.getLogger(__name__)

# Out of space or quota: 452 4.3.1 (RFC 3463 "mail system full"); any other
# failure to write the queue: 451 4.3.0.
_FULL = {errno.ENOSPC, errno.EDQUOT}
# The 250 line with a "{}" for the queue id: Reply.format builds a new Reply per
# message, formatting a plain string is cheaper and gives the same line.
_QUEUED = str(replies.QUEUED)


@dataclass(frozen=True, slots=True)
class MessageRules:
    """How messages are taken in (``BUZON_LONG_LINES``, ``_REVERSE_DNS``, ``_ADD_MISSING_HEADERS``)."""

    accept_long_lines: bool = True
    """Store body lines over 1,000 octets intact (else ``500 5.5.2``)."""
    add_missing_headers: bool = True
    """Add ``Date:`` and ``Message-ID:`` when missing."""
    reverse: ReverseDns | None = None
    """The client-name look-up; None: every client is ``unknown``."""
    spill_size: int = 128 * 1024
    """Bytes of a message held in memory; the rest goes to the spool as it arrives."""


class Handler:
    """aiosmtpd event handler for Buzón sessions."""

    def __init__(self, intake: Intake, rules: MessageRules | None = None) -> None:
        self.intake = intake
        self.rules = rules or MessageRules()
        # Read by the DATA reader (buzon.smtp.transfer) of every session.
        self.accept_long_lines = self.rules.accept_long_lines
        self.spill_size = self.rules.spill_size

    def _look_up(self, session: Any) -> None:
        """Start the client-name look-up once per session, at its greeting."""
        reverse = self.rules.reverse
        if reverse is not None and getattr(session, "reverse", None) is None:
            session.reverse = reverse.lookup(trace.peer_ip(session.peer))

    async def handle_HELO(self, server: BuzonSMTP, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        self._look_up(session)
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: BuzonSMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self._look_up(session)
        # aiosmtpd gives [host, SIZE, 8BITMIME, SMTPUTF8, (STARTTLS), HELP]; we advertise
        # PIPELINING (its command loop already answers in order) and
        # ENHANCEDSTATUSCODES (every reply carries one, see replies.translate).
        head, *middle = [r for r in responses if r[4:] != "HELP"]
        lines = [head, "250-PIPELINING", *middle, "250-ENHANCEDSTATUSCODES"]
        return [*lines[:-1], "250 " + lines[-1][4:]]

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return str(replies.OK)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        return str(replies.OK)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return str(replies.BYE)

    async def handle_DATA(self, server: BuzonSMTP, session: Any, envelope: BuzonEnvelope) -> str:
        content = envelope.original_content
        assert isinstance(content, bytes) and envelope.mail_from is not None
        spilled, envelope.spilled = envelope.spilled, None
        try:
            return await self._queue(server, session, envelope, content, spilled)
        finally:
            if spilled is not None:
                spilled.discard()  # queued (then already gone) or refused

    async def _queue(self, server: BuzonSMTP, session: Any, envelope: BuzonEnvelope,
                     content: bytes, spilled: SpilledBody | None) -> str:
        now = time.time()
        queue_id = envelope.queue_id or new_queue_id()
        # the access log's size: what the client sent
        sent = len(content) + (spilled.size if spilled is not None else 0)
        stored = await self._as_stored(server, session, envelope, content, queue_id, now)
        # The session's copy is the stored one from here on: one message in memory.
        envelope.content = envelope.original_content = content = stored
        queued = Envelope(
            queue_id=queue_id,
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            mailboxes=list(envelope.mailboxes),
            helo=session.host_name,
            peer=server.peer,
            esmtp=bool(session.extended_smtp),
            received=now,
            size=len(content),
        )
        try:
            await self.intake.store(queued, content, spilled)
        except QueueFull:
            server.hub.counters.refused_messages += 1
            return str(replies.QUEUE_FULL)
        except OSError as error:
            return self.storage_reply(error, server)
        server.hub.counters.mails_sent += 1
        server.hub.access.accepted(
            server.peer, queued.queue_id, queued.sender, queued.recipients, sent
        )
        return _QUEUED.format(queued.queue_id)

    def storage_reply(self, error: OSError, server: BuzonSMTP) -> str:
        """The reply (and log line, and count) for a message the spool could not take."""
        log.error("cannot queue a message from %s: %s", server.peer, error)
        server.hub.counters.refused_messages += 1
        return str(replies.STORAGE_FULL if error.errno in _FULL else replies.QUEUE_ERROR)

    async def _as_stored(
        self, server: BuzonSMTP, session: Any, envelope: BuzonEnvelope, content: bytes,
        queue_id: str, now: float,
    ) -> bytes:
        """The message as queued: ``Received:``, missing fields, a findable header block."""
        ip = trace.peer_ip(session.peer)
        name = UNKNOWN
        if self.rules.reverse is not None:
            name = await self.rules.reverse.name(getattr(session, "reverse", None), ip)
        transport = server.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        received = trace.received_header(
            helo=session.host_name,
            client_name=name,
            ip=ip,
            host=server.hostname,
            queue_id=queue_id,
            esmtp=bool(session.extended_smtp),
            tls=trace.tls_facts(ssl_object),
            utf8="SMTPUTF8" in envelope.mail_options,
            # An alias repeats its address once per mailbox: count addresses, not copies.
            recipients=list(dict.fromkeys(envelope.rcpt_tos)),
            when=now,
        )
        return headers.prepare(
            content,
            received=received,
            date=trace.rfc5322_date(now),
            message_id=headers.message_id(queue_id, server.hostname),
            add_missing=self.rules.add_missing_headers,
        )

    async def handle_exception(self, error: Exception) -> str:
        # One session's bug must never take the server down: log it, answer 451
        # (the client keeps its message), and let the session go on.
        log.error("SMTP session error", exc_info=error)
        return str(replies.LOCAL_ERROR)
