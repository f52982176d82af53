"""Maildir storage."""

from buzon.storage.maildir import UnsafePath, already_delivered, deliver, message_name

__all__ = ["UnsafePath", "already_delivered", "deliver", "message_name"]
