"""The queue record: the one on-disk format whose bugs lose mail. Bytes in, envelopes out.

Theory of operation
-------------------
A queue segment (see :mod:`buzon.spool.queue`) is a run of records. A record is
one header line, then exactly ``size`` message bytes::

    BUZON1 {"queue_id":"AGA2BXHGAEKN6XQA","sender":"a@example.org",...,"size":42}\\n
    <42 bytes of message>

The header is :data:`MAGIC`, the envelope's fields as compact JSON in field
order (``ensure_ascii``, so the line is ASCII and holds no raw newline), and
``\\n``. The format is unchanged since the first release; :func:`encode` writes
it byte for byte as before, so queues written by older versions still read.

Nothing here touches a file, a clock or a setting. The one clock read in this
module is ``Envelope.received``'s default, for callers that build an envelope.

A queue file is input like any other: a disk error, an older version's bug or a
hand edit can put anything there, and what a record says becomes file names
(``queue_id``, ``mailboxes``) and header lines (``sender``, ``recipients``,
``helo``, ``peer``). So :func:`decode_header` checks every field and raises a
:class:`SpoolCorrupt` subclass naming the first fault; nothing unchecked leaves
it. :func:`encode` applies the same checks, so the spool never acknowledges a
message it could not read back. The limits are wide enough for every value the
SMTP side produces (a property test builds envelopes from what
``smtp.syntax.parse_mail``/``parse_rcpt`` accept):

=============  ==========================================================================
queue_id       16 characters of the base-32 alphabet ``A-Z2-7`` (``new_queue_id``)
sender         "" (null reverse-path) or 1-1000 characters, none of them a control
               character (C0, DEL, C1) or a lone surrogate: SMTPUTF8 (RFC 6531) addresses
               are UTF-8, written as JSON ``\\u`` escapes; a command line is at most
               1001 octets, so a parsed address is shorter than 1000
recipients     1-100000 (``BUZON_MAX_RECIPIENTS``' ceiling) addresses like sender's; an
               alias accepted once repeats its address for each of its mailboxes
mailboxes      one per recipient, each ``<domain>/<local>`` passing
               ``storage.mailbox.check_mailbox``. Records written before issue 12 hold a
               bare ``<local>``: it is read as ``<domain of that recipient>/<local>``
               (IDNA A-labels; ``localhost`` when the address has no domain, a domain
               literal or a domain that is not one, since the codec knows no settings),
               so a queue recovered after the upgrade delivers into the new layout
helo           None, or at most 1000 ASCII characters without LF. CR, NUL and other
               controls do reach it (``EHLO a<CR>b<CR><LF>``: aiosmtpd splits at LF
               only) and such a message is acknowledged today, so they are allowed;
               ``storage.maildir`` keeps only visible characters of it
peer           at most 300 printable ASCII characters (``net.format_peer``)
esmtp          a bool
received       an int or float in 0..253402300799 (the last second of year 9999)
size           an int in 0..2**40
file_head      absent (the message bytes follow the line), or an int in 0..65536: the
               message is in a file of its own beside the segment, after that many
               bytes of delivery head, and no message bytes follow the line
=============  ==========================================================================

``file_head`` is the one field added since the first release. :func:`encode`
writes it only when it is set, so every other record is byte for byte what it
was; a version from before it refuses a record that has it (a downgrade with
such messages queued needs the queue delivered first).

In JSON ``true`` is not ``1``: a bool where a number belongs is refused, as are
NaN and Infinity (which Python's ``json`` would otherwise accept), keys missing,
unknown or repeated, and any byte that is not ASCII.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any

from buzon.storage.mailbox import UnsafeMailbox, check_mailbox, normal_domain, split_address

__all__ = [
    "MAGIC",
    "MAX_HEADER",
    "BadField",
    "BadHeader",
    "BadJson",
    "Envelope",
    "SpoolCorrupt",
    "TruncatedRecord",
    "decode_header",
    "encode",
    "parse_segment",
]

#: Start of every record's header line.
MAGIC = b"BUZON1 "
MAX_TEXT = 1000
MAX_RECIPIENTS = 100_000
MAX_PEER = 300
MAX_SIZE = 1 << 40
#: Longest delivery head in front of a message in a file of its own: two trace lines
#: of addresses of at most 1000 characters, with room to spare.
MAX_FILE_HEAD = 1 << 16
#: 9999-12-31T23:59:59Z: the Received: date line (``time.gmtime``) goes no further.
MAX_RECEIVED = 253_402_300_799
#: Longest header line, newline included. The worst the SMTP side can write is
#: about 91 MB: 100000 recipients of at most 772 JSON-escaped octets (a quoted
#: local part unquoting to 64 characters, a 255-octet domain literal) plus a
#: mailbox of at most 131. A line this long can only be damage.
MAX_HEADER = 1 << 27

_QUEUE_ID = re.compile(r"[A-Z2-7]{16}")
_ADDRESS = re.compile(rf"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{{1,{MAX_TEXT}}}")
_HELO = re.compile(rf"[\x00-\x09\x0b-\x7f]{{0,{MAX_TEXT}}}")
_PEER = re.compile(rf"[\x20-\x7e]{{0,{MAX_PEER}}}")


class SpoolCorrupt(ValueError):
    """Queue record does not parse; its segment is moved aside, never deleted."""

    def __init__(self, message: str | None = None) -> None:
        # dnspython's convention: the class docstring is the default message.
        super().__init__(message or self.__doc__)


class TruncatedRecord(SpoolCorrupt):
    """Record is cut short: no newline after the header, or fewer bytes than its size."""


class BadHeader(SpoolCorrupt):
    """Header line is not the BUZON1 magic, one line of JSON and a newline."""


class BadJson(SpoolCorrupt):
    """Header is not a JSON object in ASCII."""


class BadField(SpoolCorrupt):
    """A header field is missing, unknown, repeated, of the wrong type or out of range."""

    def __init__(self, name: str, problem: str, value: Any = None) -> None:
        self.field = name
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        super().__init__(f"{name}: {problem}, got {shown}")


@dataclass(slots=True)
class Envelope:
    """What SMTP said about a message, stored in front of it in the queue file."""

    queue_id: str
    sender: str
    recipients: list[str]
    mailboxes: list[str]
    """Vetted mailbox name of each recipient, same order."""
    helo: str | None = None
    peer: str = ""
    esmtp: bool = False
    received: float = field(default_factory=time.time)
    size: int = 0
    file_head: int | None = None
    """None: the ``size`` message bytes follow the header line. A number: they are
    in a file of their own (:mod:`buzon.spool.queue`), after this many bytes of the
    delivery head that file starts with (the trace lines its one mailbox gets)."""


_FIELDS = tuple(f.name for f in fields(Envelope))
#: Fields a record may leave out: each has the default that reads it as before.
_OPTIONAL = frozenset({"file_head"})
_ALL = frozenset(_FIELDS)
_REQUIRED = _ALL - _OPTIONAL
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def encode(envelope: Envelope) -> bytes:
    """The header line of a record; the ``envelope.size`` message bytes follow it.

    Raises:
        BadField, BadHeader: the envelope would not decode (see the module table).
    """
    _check(envelope)
    e = envelope
    data = {
        "queue_id": e.queue_id, "sender": e.sender, "recipients": e.recipients,
        "mailboxes": e.mailboxes, "helo": e.helo, "peer": e.peer, "esmtp": e.esmtp,
        "received": e.received, "size": e.size,
    }
    if e.file_head is not None:
        data["file_head"] = e.file_head
    line = b"".join((MAGIC, _dumps(data).encode("ascii"), b"\n"))
    if len(line) > MAX_HEADER:
        raise BadHeader(f"header line of {len(line)} octets is longer than {MAX_HEADER}")
    return line


def _shown_key(name: str) -> str:
    return name if name in _FIELDS else repr(name)[:40]


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # Python keeps the last of repeated keys, another reader may keep the first.
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise BadField(_shown_key(name), "appears more than once")
            seen.add(name)
    return result


def _no_constant(name: str) -> None:
    raise BadJson(f"header holds {name}, which is not JSON")


_decoder = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant)


def decode_header(line: bytes) -> Envelope:
    """Parse and check one header line (magic, JSON, newline).

    Args:
        line: the line, its newline included, and nothing after it.

    Returns:
        The envelope; its ``size`` says how many message bytes follow the line.

    Raises:
        TruncatedRecord: the line is a proper prefix of a header (no newline yet).
        BadHeader: too long, no magic, or more than one line.
        BadJson: not ASCII, not JSON, not an object, NaN or Infinity.
        BadField: a field missing, unknown, repeated or invalid; ``.field`` names it.
    """
    if len(line) > MAX_HEADER:
        raise BadHeader(f"header line longer than {MAX_HEADER} octets")
    if not line.startswith(MAGIC):
        if MAGIC.startswith(line):
            raise TruncatedRecord("record cut short inside its magic")
        raise BadHeader(f"header does not start with {MAGIC!r}")
    newline = line.find(b"\n", len(MAGIC))
    if newline < 0:
        raise TruncatedRecord("header line cut short: no newline")
    if newline != len(line) - 1:
        raise BadHeader("header is more than one line")
    try:
        text = line[len(MAGIC):-1].decode("ascii")
    except UnicodeDecodeError as error:
        raise BadJson(f"header holds a non-ASCII octet at {error.start}") from None
    try:
        data = _decoder.decode(text)
    except ValueError as error:  # JSONDecodeError, or an int over 4300 digits
        if isinstance(error, SpoolCorrupt):
            raise
        raise BadJson(f"header is not JSON: {error}") from None
    except RecursionError:  # "[[[[..." a thousand deep: json recurses per level
        raise BadJson("header is JSON nested too deeply") from None
    if type(data) is not dict:
        raise BadJson(f"header is a JSON {type(data).__name__}, not an object")
    if not _REQUIRED <= data.keys() <= _ALL:
        for name in _FIELDS:
            if name not in data and name not in _OPTIONAL:
                raise BadField(name, "missing")
        unknown = next(name for name in data if name not in _FIELDS)
        raise BadField(_shown_key(unknown), "unknown field")
    envelope = Envelope(**data)
    _upgrade(envelope)
    _check(envelope)
    return envelope


#: The domain of a pre-issue-12 mailbox whose recipient names none (see the module table).
LEGACY_DOMAIN = "localhost"


def _upgrade(e: Envelope) -> None:
    """Read a pre-issue-12 bare mailbox name as ``<recipient's domain>/<name>``."""
    if type(e.mailboxes) is not list or type(e.recipients) is not list:
        return  # _check names the fault
    for i, (name, address) in enumerate(zip(e.mailboxes, e.recipients, strict=False)):
        if type(name) is str and "/" not in name and type(address) is str:
            domain = split_address(address)[1]
            try:
                domain = normal_domain(domain) if domain else LEGACY_DOMAIN
            except UnsafeMailbox:
                domain = LEGACY_DOMAIN
            e.mailboxes[i] = f"{domain}/{name}"


def _check(e: Envelope) -> None:
    """Raise :class:`BadField` for the first field outside the module table's rules."""
    if type(e.queue_id) is not str or not _QUEUE_ID.fullmatch(e.queue_id):
        raise BadField("queue_id", "not 16 characters of A-Z2-7", e.queue_id)
    if type(e.sender) is not str or (e.sender and not _ADDRESS.fullmatch(e.sender)):
        raise BadField("sender", f'not "" or 1-{MAX_TEXT} characters without controls', e.sender)
    recipients, mailboxes = e.recipients, e.mailboxes
    if type(recipients) is not list or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        shown = len(recipients) if type(recipients) is list else recipients
        raise BadField("recipients", f"not a list of 1-{MAX_RECIPIENTS} addresses", shown)
    for i, address in enumerate(recipients):
        if type(address) is not str or not _ADDRESS.fullmatch(address):
            problem = f"not 1-{MAX_TEXT} characters without controls"
            raise BadField(f"recipients[{i}]", problem, address)
    if type(mailboxes) is not list or len(mailboxes) != len(recipients):
        shown = len(mailboxes) if type(mailboxes) is list else mailboxes
        raise BadField("mailboxes", f"not a list of {len(recipients)} names", shown)
    for i, name in enumerate(mailboxes):
        if type(name) is not str:
            raise BadField(f"mailboxes[{i}]", "not a string", name)
        try:
            check_mailbox(name)
        except UnsafeMailbox as error:
            raise BadField(f"mailboxes[{i}]", str(error), name) from None
    helo = e.helo
    if helo is not None and (type(helo) is not str or not _HELO.fullmatch(helo)):
        raise BadField("helo", f"not null or up to {MAX_TEXT} ASCII characters without LF", helo)
    if type(e.peer) is not str or not _PEER.fullmatch(e.peer):
        raise BadField("peer", f"not up to {MAX_PEER} printable ASCII characters", e.peer)
    if type(e.esmtp) is not bool:
        raise BadField("esmtp", "not true or false", e.esmtp)
    received = e.received
    # Compared, never converted: float(10**400) would raise OverflowError. NaN fails both.
    if type(received) not in (int, float) or not 0 <= received <= MAX_RECEIVED:
        raise BadField("received", f"not a number in 0..{MAX_RECEIVED}", received)
    if type(e.size) is not int or not 0 <= e.size <= MAX_SIZE:
        raise BadField("size", f"not an integer in 0..{MAX_SIZE}", e.size)
    head = e.file_head
    if head is not None and (type(head) is not int or not 0 <= head <= MAX_FILE_HEAD):
        raise BadField("file_head", f"not absent or an integer in 0..{MAX_FILE_HEAD}", head)


def parse_segment(data: bytes) -> tuple[list[tuple[int, Envelope]], SpoolCorrupt | None]:
    """Split a segment's bytes into records, stopping at the first fault.

    Returns:
        ``(records, fault)``: each good record as (offset of its header, envelope),
        in file order, and None if the whole buffer parsed, else why it stopped.
        Every proper prefix of a valid segment ends in a :class:`TruncatedRecord`
        fault (or parses whole, if it ends between records); none is misread.
    """
    records: list[tuple[int, Envelope]] = []
    offset, total = 0, len(data)
    while offset < total:
        end = data.find(b"\n", offset, offset + MAX_HEADER)
        line = data[offset: end + 1] if end >= 0 else data[offset: offset + MAX_HEADER + 1]
        try:
            envelope = decode_header(line)
        except SpoolCorrupt as fault:
            return records, fault
        body = end + 1
        if envelope.file_head is not None:  # its bytes are in a file of its own
            records.append((offset, envelope))
            offset = body
            continue
        if body + envelope.size > total:
            return records, TruncatedRecord(
                f"record {envelope.queue_id} at {offset} has {total - body} "
                f"of its {envelope.size} message octets"
            )
        records.append((offset, envelope))
        offset = body + envelope.size
    return records, None
