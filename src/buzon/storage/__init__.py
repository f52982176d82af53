"""Mail storage: mailbox names and Maildir delivery."""

from buzon.storage.mailbox import UnsafeMailbox, check_mailbox, mailbox_name
from buzon.storage.maildir import UnsafePath, already_delivered, deliver, message_name

__all__ = [
    "UnsafeMailbox",
    "UnsafePath",
    "already_delivered",
    "check_mailbox",
    "deliver",
    "mailbox_name",
    "message_name",
]
