"""Mailbox names: which folder under the mail root a recipient's mail goes to.

The rule for a safe folder name is a storage rule: :mod:`buzon.storage.maildir`
checks every name again before it builds a path, and the SMTP side asks
:func:`mailbox_name` at ``RCPT`` so that an unsafe recipient is refused before
anything is queued. Nothing here touches the file system.
"""

from __future__ import annotations

import re

__all__ = ["MAX_LOCAL_PART", "UnsafeMailbox", "check_mailbox", "mailbox_name"]

#: RFC 5321 §4.5.3.1.1; also keeps Maildir directory names short.
MAX_LOCAL_PART = 64


class UnsafeMailbox(ValueError):
    """The recipient's local part cannot safely name a directory under the mail root."""


def mailbox_name(address: str) -> str:
    """The Maildir folder name for a recipient: its local part, unquoted, lowercased.

    SPEC §3 names mailboxes by local part. Every character that could climb out of
    the mail root, hide a folder, or confuse a shell or a terminal is refused rather
    than escaped, so one name never maps onto another's folder.

    Raises:
        UnsafeMailbox: see :func:`check_mailbox`.
    """
    local = address.rpartition("@")[0] if "@" in address else address
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return check_mailbox(local.lower())


def check_mailbox(name: str) -> str:
    """Check that a (derived) mailbox name is safe as one directory under the mail root.

    Separate from :func:`mailbox_name` so a stored name can be checked again
    without being parsed as an address ('"a@b"@x' names the folder "a@b").

    Raises:
        UnsafeMailbox: empty, over 64 octets, a leading dot (".", ".."), a slash or
            backslash, NUL or any control character, non-ASCII, or upper case.
    """
    if not name:
        raise UnsafeMailbox("empty local part")
    if not name.isascii():
        raise UnsafeMailbox("non-ASCII character")
    if len(name) > MAX_LOCAL_PART:
        raise UnsafeMailbox("local part longer than 64 octets")
    if name.startswith("."):
        raise UnsafeMailbox("leading dot")
    if not name.isascii() or any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafeMailbox("slash, backslash, control or non-ASCII character")
    if name != name.lower():
        raise UnsafeMailbox("not lower case")
    return name
