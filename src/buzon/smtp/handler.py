"""The aiosmtpd handler: hooks that return reply lines and hand messages to the spool.

Each hook validates, delegates and returns a constant from
:mod:`buzon.smtp.replies`. ``handle_DATA`` is the durability boundary: it
returns ``250 ... queued as <id>`` only after :meth:`buzon.spool.Intake.store`
has flushed the message to disk, and a failing disk becomes a 4xx, never a 5xx,
so the client keeps the message and retries (SPEC §2, issue 6).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from buzon.smtp import replies
from buzon.smtp.session import BuzonEnvelope, BuzonSMTP
from buzon.spool import Envelope, Intake, new_queue_id

__all__ = ["Handler"]

log = logging.getLogger(__name__)

# Out of space or quota: 452 4.3.1 (RFC 3463 "mail system full"); any other
# failure to write the queue: 451 4.3.0.
_FULL = {errno.ENOSPC, errno.EDQUOT}
# The 250 line with a "{}" for the queue id: Reply.format builds a new Reply per
# message, formatting a plain string is cheaper and gives the same line.
_QUEUED = str(replies.QUEUED)


class Handler:
    """aiosmtpd event handler for Buzón sessions."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def handle_HELO(self, server: BuzonSMTP, session: Any, envelope: Any, hostname: str) -> str:  # noqa: N802,E501
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(  # noqa: N802
        self, server: BuzonSMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd gives [host, SIZE, 8BITMIME, (STARTTLS), HELP]; we advertise
        # PIPELINING (its command loop already answers in order) and
        # ENHANCEDSTATUSCODES (every reply carries one, see replies.translate).
        head, *middle = [r for r in responses if r[4:] != "HELP"]
        lines = [head, "250-PIPELINING", *middle, "250-ENHANCEDSTATUSCODES"]
        return [*lines[:-1], "250 " + lines[-1][4:]]

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:  # noqa: N802
        return str(replies.OK)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return str(replies.OK)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return str(replies.BYE)

    async def handle_DATA(self, server: BuzonSMTP, session: Any, envelope: BuzonEnvelope) -> str:  # noqa: N802
        content = envelope.original_content
        assert isinstance(content, bytes) and envelope.mail_from is not None
        queued = Envelope(
            queue_id=new_queue_id(),
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            mailboxes=list(envelope.mailboxes),
            helo=session.host_name,
            peer=server.peer,
            esmtp=bool(session.extended_smtp),
            size=len(content),
        )
        try:
            await self.intake.store(queued, content)
        except OSError as error:
            log.error("cannot queue a message from %s: %s", server.peer, error)
            server.hub.counters.refused_messages += 1
            return str(replies.STORAGE_FULL if error.errno in _FULL else replies.QUEUE_ERROR)
        server.hub.counters.mails_sent += 1
        server.hub.access.accepted(
            server.peer, queued.queue_id, queued.sender, queued.recipients, queued.size
        )
        return _QUEUED.format(queued.queue_id)

    async def handle_exception(self, error: Exception) -> str:
        # One session's bug must never take the server down: log it, answer 451
        # (the client keeps its message), and let the session go on.
        log.error("SMTP session error", exc_info=error)
        return str(replies.LOCAL_ERROR)
