"""Junk filing: which folder a transformed message goes to, read from one header.

Theory of operation
-------------------
A spam filter in the transform chain (SpamAssassin's sidecar, or any other)
marks a message by adding a header; this module reads that header and decides,
for the whole message, one of three routes:

* ``INBOX``: below the junk threshold, or no score at all;
* ``JUNK``: at or above ``threshold``: delivered into each recipient's
  ``Junk`` folder (Maildir++ ``.Junk/``, which Dovecot shows as the
  special-use ``\\Junk`` mailbox);
* ``DISCARD``: at or above the optional ``discard`` threshold: not delivered
  at all, counted (``spam_discarded``) and logged with its queue id and score.

The rule is about a header, not about SpamAssassin: any sidecar that writes
the header gets the same effect. The score is the first ``score=<number>`` in
the header's value (SpamAssassin's ``X-Spam-Status: Yes, score=7.1
required=5.0 ...``), else a value that is just a number (``X-Spam-Score:
7.1``, rspamd's style); a value that is only ``yes``/``true`` (``X-Spam-Flag:
YES``) counts as exactly the junk threshold: junk, never discarded.

Trust: the header is read only from a message that went through the transform
chain (the caller's job), and only its first occurrence in the header block,
the one the filter added last on top; SpamAssassin also removes any
``X-Spam-*`` headers a sender forged before it adds its own. A message
delivered without transforms (switched off, or the failure policy's
``deliver``) goes to the inbox whatever it carries: a sender cannot file its
own mail anywhere, nor have someone else's discarded.

Pure: bytes in, a route out; no file, clock or settings object.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["JUNK_FOLDER", "JunkRule", "Route", "header_value", "route", "score_of"]

#: The Maildir++ folder junk goes to (Dovecot: mailbox "Junk", special use \Junk).
JUNK_FOLDER = ".Junk"

_SCORE = re.compile(rb"(?:^|[\s,;])score=(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(rb"\s*(-?\d+(?:\.\d+)?)\s*$")
_YES = frozenset({b"yes", b"true"})
#: Bytes of header block searched: a header that comes later is not one a filter added.
_MAX_HEADER_BLOCK = 256 * 1024


class Route(enum.Enum):
    """Where a message goes."""

    INBOX = ""
    JUNK = JUNK_FOLDER
    DISCARD = None


@dataclass(frozen=True, slots=True)
class JunkRule:
    """The operator's rule (``BUZON_JUNK_*``)."""

    header: str = "X-Spam-Status"
    """The header that carries the verdict (case-insensitive)."""
    threshold: float = 5.0
    """At or above: the Junk folder (SpamAssassin's own ``required_score`` default)."""
    discard: float | None = None
    """At or above: not delivered, counted. None: never discard."""


def header_value(content: bytes, name: str) -> bytes | None:
    """The unfolded value of the first ``name:`` field in the header block, or None.

    The header block ends at the first empty line (or after 256 KiB); a message
    with no header block has no such field.
    """
    wanted = name.lower().encode("ascii") + b":"
    block_end = content.find(b"\r\n\r\n", 0, _MAX_HEADER_BLOCK)
    if block_end < 0:
        block_end = content.find(b"\n\n", 0, _MAX_HEADER_BLOCK)
    block = content[:block_end] if block_end >= 0 else content[:_MAX_HEADER_BLOCK]
    lines = block.replace(b"\r\n", b"\n").split(b"\n")
    for index, line in enumerate(lines):
        if line[: len(wanted)].lower() != wanted:
            continue
        value = [line[len(wanted):]]
        for more in lines[index + 1:]:
            if not more[:1] in (b" ", b"\t"):
                break
            value.append(more)
        return b" ".join(part.strip() for part in value)
    return None


def score_of(value: bytes, threshold: float) -> float | None:
    """The spam score a header value states (see the module docstring), or None."""
    match = _SCORE.search(value) or _NUMBER.match(value)
    if match is not None:
        try:
            return float(match.group(1))
        except ValueError:  # pragma: no cover - the patterns admit only numbers
            return None
    if value.strip().lower() in _YES:
        return threshold
    return None


def route(content: bytes, rule: JunkRule) -> tuple[Route, float | None]:
    """The route of a transformed message, and the score it was decided on."""
    value = header_value(content, rule.header)
    if value is None:
        return Route.INBOX, None
    score = score_of(value, rule.threshold)
    if score is None:
        return Route.INBOX, None
    if rule.discard is not None and score >= rule.discard:
        return Route.DISCARD, score
    if score >= rule.threshold:
        return Route.JUNK, score
    return Route.INBOX, score
