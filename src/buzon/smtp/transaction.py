"""MAIL and RCPT (RFC 5321 §4.1.1.2-3): the envelope of one transaction.

Theory of operation
-------------------
A mixin of :class:`buzon.smtp.session.BuzonSMTP`. Both commands are parsed by
the pure :mod:`buzon.smtp.syntax` instead of aiosmtpd's parser (which refuses
``MAIL FROM:<>``); a failure is one reply from :mod:`buzon.smtp.replies`.
``MAIL`` first checks the session's own limits (shutting down, lifetime,
messages per session); ``RCPT`` the recipient limit, then asks the recipient
directory (``hub.recipients``, :mod:`buzon.directory`) which mailboxes the
recipient's mail goes to, before anything is queued: a domain not accepted gets
``550 5.7.1``, an unknown user or unsafe name ``550 5.1.1``.
"""

from __future__ import annotations

from typing import Any

from aiosmtpd.smtp import SMTP, Envelope

from buzon.directory import Refusal
from buzon.smtp import replies
from buzon.smtp.syntax import SyntaxFault, parse_mail, parse_rcpt

__all__ = ["BuzonEnvelope", "Transaction"]


_REFUSED = {
    Refusal.RELAY: replies.RELAY_DENIED,
    Refusal.UNKNOWN: replies.USER_UNKNOWN,
    Refusal.UNSAFE: replies.UNSAFE_MAILBOX,
}


def _printable(address: str) -> str:
    """An address made safe to echo in a reply: printable ASCII, at most 256 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in address)[:256]


class BuzonEnvelope(Envelope):
    """aiosmtpd's envelope plus the vetted mailbox of each recipient.

    ``rcpt_tos`` and ``mailboxes`` run in step, one pair per mailbox: an alias
    accepted once repeats its address for each of its mailboxes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mailboxes: list[str] = []
        self.accepted_rcpts = 0
        """RCPT commands accepted (what the recipient limit counts)."""
        self.spilled: Any = None
        """A large message's body past ``content``, in the spool (:mod:`buzon.smtp.transfer`)."""
        self.queue_id: str | None = None
        """The queue id given at DATA when the body went to the spool (it names the file)."""


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
            args = parse_rcpt(arg, extended=self.session.extended_smtp,
                              utf8="SMTPUTF8" in envelope.mail_options)
        except SyntaxFault as fault:
            await self.push(fault.reply)
            return
        # Counted in RCPT commands accepted, not in the mailboxes an alias fans out to.
        if envelope.accepted_rcpts >= self.hub.limits.max_recipients:
            await self.push(replies.TOO_MANY_RECIPIENTS)
            return
        lookup = self.hub.recipients.resolve(args.address)
        if lookup.refusal is not None:
            await self.push(_REFUSED[lookup.refusal].format(_printable(args.address)))
            return
        # One (address, mailbox) pair per mailbox: the writer zips them and writes
        # each mailbox once, so an alias to several mailboxes gives each one copy.
        for mailbox in lookup.mailboxes:
            envelope.rcpt_tos.append(args.address)
            envelope.mailboxes.append(mailbox)
        envelope.accepted_rcpts += 1
        await self.push(replies.RCPT_OK)
