"""The SMTP service: replies, argument syntax, the aiosmtpd session, handler and server."""

from buzon.smtp.replies import Reply

__all__ = ["Reply"]
