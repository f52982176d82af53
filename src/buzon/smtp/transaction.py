"""MAIL and RCPT (RFC 5321 §4.1.1.2-3): the envelope of one transaction.

Theory of operation
-------------------
A mixin of :class:`buzon.smtp.session.BuzonSMTP`. Both commands are parsed by
the pure :mod:`buzon.smtp.syntax` instead of aiosmtpd's parser (which refuses
``MAIL FROM:<>``); a failure is one reply from :mod:`buzon.smtp.replies`.
``MAIL`` first checks the session's own limits (shutting down, lifetime,
messages per session); ``RCPT`` the recipient limit, then where the recipient's
mail would go, before anything is queued.
"""

from __future__ import annotations

from typing import Any

from aiosmtpd.smtp import SMTP, Envelope

from buzon.smtp import replies
from buzon.smtp.syntax import SyntaxFault, parse_mail, parse_rcpt
from buzon.storage.mailbox import UnsafeMailbox, mailbox_name

__all__ = ["BuzonEnvelope", "Transaction"]


class BuzonEnvelope(Envelope):
    """aiosmtpd's envelope plus the vetted mailbox name of each recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.mailboxes: list[str] = []


class Transaction(SMTP):
    """``smtp_MAIL`` and ``smtp_RCPT`` of a Buzón session."""

    hub: Any  # buzon.smtp.session.Hub
    _expired: bool
    _messages: int

    # -- MAIL / RCPT (RFC 5321 §4.1.1.2-3) ---------------------------------------------------
    async def smtp_MAIL(self, arg: str | None) -> None:
        assert self.envelope is not None and self.session is not None
        if self.hub.stopping:
            self.say_and_close(replies.SHUTTING_DOWN.format(self.hostname))
            return
        if self._expired:
            self.say_and_close(replies.SESSION_TOO_LONG.format(self.hostname))
            return
        if self._messages >= self.hub.limits.max_messages_per_session:
            self.say_and_close(replies.TOO_MANY_MESSAGES.format(self.hostname))
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

    async def smtp_RCPT(self, arg: str | None) -> None:
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
