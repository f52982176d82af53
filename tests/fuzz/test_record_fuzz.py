"""Fuzz target: the queue record codec (``buzon.spool.record``).

Every queue file is read back through ``parse_segment`` at start-up, and every
record a delivery re-reads through ``decode_header``; what they return becomes
file names and header lines. Properties, for arbitrary bytes, for mutated valid
records (bytes flipped, inserted, deleted, cut, records spliced) and for valid
headers with one field replaced by arbitrary JSON:

* nothing but :class:`SpoolCorrupt` subclasses ever escapes ``decode_header``,
  and ``parse_segment`` never raises at all;
* whatever decodes obeys the field rules (checked here independently of the
  codec: queue id alphabet, mailboxes safe as directories, printable addresses)
  and survives ``decode(encode(envelope)) == envelope``;
* ``parse_segment`` returns records in order, each inside the buffer, each
  decoding again at its offset, and reports a fault exactly when it stopped
  short of the end.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from buzon.spool.record import (
    MAGIC,
    MAX_RECEIVED,
    Envelope,
    SpoolCorrupt,
    decode_header,
    encode,
    parse_segment,
)
from buzon.storage.mailbox import check_mailbox

FUZZ = settings.get_profile("fuzz")
# See test_syntax_fuzz.py: hypothesis' patch writer warns on import.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

SEEDS = [
    Envelope("AGA2BXHGAEKN6XQA", "emilio@example.org", ["bob@example.org"], ["example.org/bob"],
             helo="client.example.org", peer="192.0.2.7:40122", esmtp=True,
             received=1764412800.123456, size=5),
    Envelope("AGA2BXHGAEKN6XQB", "", ["postmaster"], ["localhost/postmaster"], received=0, size=0),
    Envelope("ZZZZZZZZZZZZZZZ7", 'a@[192.0.2.1]', ['"O.d"@x', "C@d", "e@f"],
             ["x/o.d", "d/c", "f/e"], helo="a\rb\x00", peer="[::1]:25", received=1.5, size=2),
]
RECORDS = [encode(e) + b"m" * e.size for e in SEEDS]
_ID = re.compile(r"[A-Z2-7]{16}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
# Addresses: SMTPUTF8 (issue 12) lets UTF-8 in, never a control or a lone surrogate.
_NO_CONTROL = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]*")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """One to three valid records, then a few byte-level edits."""
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(RECORDS), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "cut", "splice"]))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[at:at] = draw(st.sampled_from([b"\n", b"0", b'"', b"\\", b"}", b"\xff"])
                               | st.binary(max_size=4))
        elif edit == "delete":
            del data[at: at + draw(st.integers(1, 8))]
        elif edit == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from(RECORDS))[: draw(st.integers(0, 300))]
    return bytes(data)


SEGMENTS = st.binary(max_size=400) | mutated() | st.binary(max_size=60).map(MAGIC.__add__)

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.sampled_from([10**400, -(10**400), 253402300800, 2**63, 1 << 40])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)
_field = st.sampled_from([*json.loads(encode(SEEDS[0])[len(MAGIC):]), "extra"])


def _obeys_the_rules(envelope: Envelope) -> None:
    assert _ID.fullmatch(envelope.queue_id)
    assert _NO_CONTROL.fullmatch(envelope.sender) and len(envelope.sender) <= 1000
    assert 1 <= len(envelope.recipients) == len(envelope.mailboxes)
    assert all(r and _NO_CONTROL.fullmatch(r) for r in envelope.recipients)
    assert all(check_mailbox(m) == m for m in envelope.mailboxes)
    assert envelope.helo is None or "\n" not in envelope.helo
    assert _PRINTABLE.fullmatch(envelope.peer)
    assert type(envelope.esmtp) is bool and type(envelope.size) is int and envelope.size >= 0
    assert type(envelope.received) in (int, float) and 0 <= envelope.received <= MAX_RECEIVED
    assert decode_header(encode(envelope)) == envelope


def _decode(line: bytes) -> Envelope | None:
    try:
        envelope = decode_header(line)
    except SpoolCorrupt:
        return None
    _obeys_the_rules(envelope)
    return envelope


@FUZZ
@given(SEGMENTS)
@example(b"")
@example(MAGIC + b"{}\n")
@example(MAGIC + b'{"size":1e999}\n')
@example(RECORDS[0].replace(b'"size":5', b'"size":-5'))
@example(MAGIC + b"[" * 5000 + b"\n")
def test_decode_header_raises_only_spool_corrupt(data: bytes) -> None:
    _decode(data)
    _decode(data[: data.find(b"\n") + 1])


@FUZZ
@given(SEGMENTS)
@example(RECORDS[0] + RECORDS[1][:-1])
@example(RECORDS[1] + MAGIC + b'{"a":' * 5000 + b"\n")
@example(RECORDS[1] * 3)
def test_parse_segment_never_raises_and_never_misreads(data: bytes) -> None:
    records, fault = parse_segment(data)
    end = 0
    for offset, envelope in records:
        assert offset == end
        newline = data.index(b"\n", offset)
        assert decode_header(data[offset: newline + 1]) == envelope
        _obeys_the_rules(envelope)
        end = newline + 1 + envelope.size
        assert end <= len(data)
    assert (fault is None) == (end == len(data))
    assert fault is None or isinstance(fault, SpoolCorrupt)


@FUZZ
@given(st.sampled_from(SEEDS), _field, _json)
@example(SEEDS[0], "size", True)
@example(SEEDS[0], "received", float("nan"))
@example(SEEDS[0], "received", 10**400)
@example(SEEDS[0], "mailboxes", [".."])
def test_one_field_replaced_by_any_json_is_refused_or_obeys_the_rules(
    seed: Envelope, name: str, value: Any
) -> None:
    fields = {**json.loads(encode(seed)[len(MAGIC):]), name: value}
    try:
        text = json.dumps(fields, separators=(",", ":"))
    except ValueError:  # an int json will not write (digit limit)
        return
    _decode(MAGIC + text.encode() + b"\n")
