"""Mailbox names: which folder under the mail root a recipient's mail goes to.

The rule for a safe folder name is a storage rule: :mod:`buzon.storage.maildir`
checks every name again before it builds a path, the queue record codec checks
every stored name on read, and the SMTP side asks :func:`mailbox_name` at
``RCPT`` so that an unsafe recipient is refused (``550 5.1.1``) before anything
is queued. Nothing here touches the file system.

The alphabet
------------
A mailbox name is 1-64 characters of ``a-z``, ``0-9`` and ``. _ - + =``, not
starting with ``.`` or ``-``. Why exactly these:

* lower-case letters and digits: every ordinary local part, folded to one case
  so ``Bob`` and ``bob`` share a folder (SPEC §3);
* ``.`` ``_`` ``-``: the separators of real-world local parts
  (``john.doe``, ``no_reply``, ``mailer-daemon``);
* ``+`` and ``=``: subaddresses (``a+tag``) and the tags of VERP/SRS bounce
  addresses (``bounce+x=example.org``).

Everything else is refused, not escaped, so one name never maps onto another's
folder and a name is safe wherever an operator's tool puts it: ``/`` and ``\\``
would leave the mail root; a leading ``.`` hides a folder (and makes ``.`` and
``..``); a leading ``-`` reads as an option to ``rm``, ``tar`` or ``find``;
space (so no trailing space either), quotes and
``$ ` | ; & < > ( ) * ? [ ] { } ! # ~ % ^ @ , :`` mean something to a shell, a
glob, a Maildir file name (``:``) or an address parser; control characters
(ESC, CR, NUL) drive terminals and forge log lines; non-ASCII has several
spellings of one name. RFC 5321 allows more in a local part (any ``atext``,
and anything quoted); such a recipient gets ``550 5.1.1 ... unsafe mailbox
name`` at ``RCPT``, before the client has sent anything it could lose.
"""

from __future__ import annotations

import re

__all__ = ["ALPHABET", "MAX_LOCAL_PART", "UnsafeMailbox", "check_mailbox", "mailbox_name"]

#: RFC 5321 §4.5.3.1.1; also keeps Maildir directory names short.
MAX_LOCAL_PART = 64
#: Every character a mailbox name may hold (see the module docstring for why).
ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-+=")
_SAFE = re.compile(r"[a-z0-9_+=][a-z0-9._+=-]{0,63}")


class UnsafeMailbox(ValueError):
    """The recipient's local part cannot safely name a directory under the mail root."""


def mailbox_name(address: str) -> str:
    """The Maildir folder name for a recipient: its local part, unquoted, lowercased.

    SPEC §3 names mailboxes by local part. A name outside the alphabet (module
    docstring) is refused rather than escaped, so one name never maps onto
    another's folder.

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
    without being parsed as an address.

    Raises:
        UnsafeMailbox: empty, over 64 octets, a leading dot or hyphen, upper case,
            or any character outside the alphabet (see the module docstring).
    """
    if _SAFE.fullmatch(name):
        return name
    if not name:
        raise UnsafeMailbox("empty local part")
    if len(name) > MAX_LOCAL_PART:
        raise UnsafeMailbox("local part longer than 64 octets")
    if name.startswith("."):
        raise UnsafeMailbox("leading dot")
    if name.startswith("-"):
        raise UnsafeMailbox("leading hyphen")
    if name != name.lower():
        raise UnsafeMailbox("not lower case")
    bad = next(c for c in name if c not in ALPHABET)
    raise UnsafeMailbox(f"character {bad!r} is not one of a-z 0-9 . _ - + =")
