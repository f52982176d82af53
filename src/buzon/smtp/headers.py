"""The message as stored: our trace field first, a header block readers can find, Date and Message-ID.

Theory of operation
-------------------
Pure: bytes in, bytes out, the time and names passed in. :func:`prepare` is
called once per message at ``DATA``, before the message is queued.

The header block (RFC 5322 §2.2, §3.5) is read from the start of the message,
line by line (a line ends at LF; a CR before it is part of the ending):

* a *field line* starts with a field name (printable ASCII but ``:``, RFC 5322
  ``ftext``), optional blanks (the obsolete syntax of §4.5), then ``:``;
* a *continuation line* starts with SP or HTAB and follows a field line;
* the block is the longest run of such lines from the start. What follows it
  decides the case:

==================================  ====================================================
after the run                        the message is stored as
==================================  ====================================================
an empty line, or the end            as it came (``headers``): the run is the header
                                     block; a message that begins with an empty line
                                     has an empty header block and a body
any other line, run not empty        the run, an inserted empty line, the rest
                                     (``mixed``): ``Subject: x`` then ``text`` without
                                     a blank line; the text is where Python's email
                                     parser and mail readers start the body anyway
any other line, run empty            an inserted empty line, then the whole message
                                     (``headerless``): the first line is no field
                                     (``hello`` or a continuation), so all of it is
                                     body; without the line, our ``Received:`` would
                                     swallow it and readers showed an empty message
==================================  ====================================================

The empty message is ``headerless`` too (our fields, an empty line, no body).

Missing fields: ``Date:`` and ``Message-ID:`` are added when no field of that
name (case-insensitive) is in the header block, and never to a message with a
``DKIM-Signature:`` field, whose signature may declare them absent (the reason
Postfix adds them only for its own clients; see :mod:`buzon.config.messages`).
Added fields go right after ``Received:``, before the message's own fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HEADERLESS", "HEADERS", "MIXED", "HeaderBlock", "message_id", "prepare", "scan"]

HEADERS = "headers"
MIXED = "mixed"
HEADERLESS = "headerless"

_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_DKIM = b"dkim-signature"
_NOT_ID_HOST = re.compile(r"[^A-Za-z0-9.-]")


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """Where a message's header block ends and what it holds."""

    kind: str
    """:data:`HEADERS`, :data:`MIXED` or :data:`HEADERLESS` (module table)."""
    end: int
    """Offset just past the block's last line: where an empty line goes if one is missing."""
    names: frozenset[bytes]
    """Field names in the block, lower-cased."""


def scan(content: bytes) -> HeaderBlock:
    """Find the header block of ``content`` (see the module table)."""
    names: set[bytes] = set()
    start, total = 0, len(content)
    while start < total:
        first = content[start]
        if first == 0x0A or (first == 0x0D and content.startswith(b"\r\n", start)):
            return HeaderBlock(HEADERS, start, frozenset(names))  # the empty line
        if first not in (0x20, 0x09) or not names:  # else a continuation line
            match = _FIELD.match(content, start)  # ftext excludes CR and LF
            if match is None:
                kind = MIXED if names else HEADERLESS
                return HeaderBlock(kind, start, frozenset(names))
            names.add(match.group(1).lower())
        newline = content.find(b"\n", start)
        start = total if newline < 0 else newline + 1
    if not names:
        return HeaderBlock(HEADERLESS, 0, frozenset())
    return HeaderBlock(HEADERS, total, frozenset(names))


def message_id(queue_id: str, host: str) -> str:
    """``<queue id@host>`` (RFC 5322 §3.6.4), the host kept to letters, digits, ``.`` and ``-``."""
    return f"<{queue_id}@{_NOT_ID_HOST.sub('', host).strip('.') or 'localhost'}>"


def prepare(
    content: bytes,
    *,
    received: bytes,
    date: str,
    message_id: str,
    add_missing: bool,
) -> bytes:
    """The message to queue: ``received``, missing fields, and ``content`` made readable.

    Args:
        content: the message as the client sent it (dot-unstuffed).
        received: our ``Received:`` field, CRLF-ended.
        date: the ``Date:`` value to add if missing (RFC 5322 §3.3).
        message_id: the ``Message-ID:`` value to add if missing, with its ``<>``.
        add_missing: whether to add missing ``Date:``/``Message-ID:`` at all.

    Returns:
        The bytes to store; ``content`` is in it unchanged, but for one empty line
        inserted where the header block lacks its end (module table).
    """
    block = scan(content)
    parts = [received]
    if add_missing and _DKIM not in block.names:
        if b"date" not in block.names:
            parts.append(b"Date: " + date.encode("ascii") + b"\r\n")
        if b"message-id" not in block.names:
            parts.append(b"Message-ID: " + message_id.encode("ascii") + b"\r\n")
    if block.kind == HEADERS:
        parts.append(content)
    elif block.kind == HEADERLESS:
        parts += [b"\r\n", content]
    else:
        parts += [content[: block.end], b"\r\n", content[block.end:]]
    return b"".join(parts)
