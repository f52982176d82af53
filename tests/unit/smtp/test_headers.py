"""The message as stored: header-block detection and missing Date/Message-ID, as tables."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.smtp.headers import HEADERLESS, HEADERS, MIXED, message_id, prepare, scan

# Hypothesis imports libcst to write a patch of a failing example; its
# mypy_extensions import warns, which filterwarnings=error turns into an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

RECEIVED = b"Received: from c (unknown [192.0.2.1])\r\n\tby mx.test (Buzon) with ESMTP id Q;\r\n\tx\r\n"
DATE = "Sun, 29 Nov 2026 14:49:33 +0000"
MID = "<AGA2BXHGAEKN6XQA@mx.test>"
ADDED = (RECEIVED + b"Date: " + DATE.encode() + b"\r\nMessage-ID: " + MID.encode() + b"\r\n")

SCAN: list[tuple[bytes, str, int, set[bytes]]] = [
    # (content, kind, end, names)
    (b"Subject: s\r\n\r\nbody\r\n", HEADERS, 12, {b"subject"}),
    (b"Subject: s\r\n folded\r\n\tagain\r\nTo: a\r\n\r\nb\r\n", HEADERS, 36, {b"subject", b"to"}),
    (b"Subject : obsolete blank before the colon\r\n\r\n", HEADERS, 43, {b"subject"}),
    (b"X-A:no space\r\n\r\n", HEADERS, 14, {b"x-a"}),
    (b"Subject: only headers, no body\r\n", HEADERS, 32, {b"subject"}),
    (b"Subject: bare LF ends\n\nbody\n", HEADERS, 22, {b"subject"}),
    (b"\r\nbody after an empty header block\r\n", HEADERS, 0, set()),
    (b"hello world\r\nno headers at all\r\n", HEADERLESS, 0, set()),
    (b"", HEADERLESS, 0, set()),
    (b" starts with a blank: a continuation of nothing\r\n", HEADERLESS, 0, set()),
    (b"From alice Sun Nov 29 14:49:33 2026\r\nSubject: mbox\r\n\r\n", HEADERLESS, 0, set()),
    (b": empty name\r\n\r\n", HEADERLESS, 0, set()),
    (b"Subject: s\r\nthe body, with no blank line before it\r\n", MIXED, 12, {b"subject"}),
    (b"Subject: s\r\nDate: d\r\nbody: looks like a field\r\nplain\r\n\r\n", MIXED, 47,
     {b"subject", b"date", b"body"}),
]


@pytest.mark.parametrize(("content", "kind", "end", "names"), SCAN)
def test_scan_table(content: bytes, kind: str, end: int, names: set[bytes]) -> None:
    block = scan(content)
    assert (block.kind, block.end, set(block.names)) == (kind, end, names)


def _prepare(content: bytes, add_missing: bool = True) -> bytes:
    return prepare(content, received=RECEIVED, date=DATE, message_id=MID, add_missing=add_missing)


PREPARE: list[tuple[str, bytes, bytes]] = [
    ("both present: only Received in front, the rest byte-identical",
     b"Date: x\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n",
     RECEIVED + b"Date: x\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"),
    ("names match without regard to case",
     b"DATE: x\r\nmessage-id: <m@x>\r\n\r\nbody\r\n",
     RECEIVED + b"DATE: x\r\nmessage-id: <m@x>\r\n\r\nbody\r\n"),
    ("Date missing", b"Message-Id: <m@x>\r\n\r\nb\r\n",
     RECEIVED + b"Date: " + DATE.encode() + b"\r\nMessage-Id: <m@x>\r\n\r\nb\r\n"),
    ("both missing", b"Subject: s\r\n\r\nb\r\n", ADDED + b"Subject: s\r\n\r\nb\r\n"),
    ("headerless: an empty line makes all of it body", b"hello\r\nworld\r\n",
     ADDED + b"\r\nhello\r\nworld\r\n"),
    ("empty message", b"", ADDED + b"\r\n"),
    ("mixed: the empty line goes before the first non-field line",
     b"Subject: s\r\nbody line\r\n", ADDED + b"Subject: s\r\n\r\nbody line\r\n"),
    ("a Date: in the body does not count", b"Subject: s\r\n\r\nDate: in body\r\n",
     ADDED + b"Subject: s\r\n\r\nDate: in body\r\n"),
    ("empty header block, then the body", b"\r\nbody\r\n", ADDED + b"\r\nbody\r\n"),
    ("DKIM-signed: nothing added, the signature may cover their absence",
     b"DKIM-Signature: v=1; h=from:date:message-id\r\nFrom: a\r\n\r\nb\r\n",
     RECEIVED + b"DKIM-Signature: v=1; h=from:date:message-id\r\nFrom: a\r\n\r\nb\r\n"),
]


@pytest.mark.parametrize(("why", "content", "stored"), PREPARE, ids=[p[0] for p in PREPARE])
def test_prepare_table(why: str, content: bytes, stored: bytes) -> None:
    assert _prepare(content) == stored


def test_nothing_added_when_switched_off_but_the_body_is_still_found() -> None:
    assert _prepare(b"Subject: s\r\n\r\nb\r\n", add_missing=False) == RECEIVED + b"Subject: s\r\n\r\nb\r\n"
    assert _prepare(b"hello\r\n", add_missing=False) == RECEIVED + b"\r\nhello\r\n"


@pytest.mark.parametrize(
    ("content", "subject", "body"),
    [
        (b"hello world\r\nsecond line\r\n", None, "hello world\r\nsecond line\r\n"),
        (b"Subject: hi\r\nno blank line\r\n", "hi", "no blank line\r\n"),
        (b"Subject: hi\r\n\r\nnormal\r\n", "hi", "normal\r\n"),
        (b"\r\nonly body\r\n", None, "only body\r\n"),
    ],
)
def test_pythons_email_parser_reads_back_the_body_and_both_fields(
    content: bytes, subject: str | None, body: str,
) -> None:
    parsed = email.message_from_bytes(_prepare(content), policy=email.policy.default)
    assert parsed["Subject"] == subject
    assert parsed["Date"] == DATE and parsed["Message-ID"] == MID
    assert parsed.get_content().replace("\n", "\r\n").replace("\r\r", "\r") == body
    assert not parsed.defects


@given(st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"Date: x", b"Message-ID: <m>", b"DKIM-Signature: v", b"a", b" b", b":", b"\r\n", b"\n"]),
    max_size=12).map(b"".join))
def test_content_survives_with_at_most_one_empty_line_inserted(content: bytes) -> None:
    block = scan(content)
    prefix = RECEIVED
    if b"dkim-signature" not in block.names:
        if b"date" not in block.names:
            prefix += b"Date: " + DATE.encode() + b"\r\n"
        if b"message-id" not in block.names:
            prefix += b"Message-ID: " + MID.encode() + b"\r\n"
    stored = _prepare(content)
    assert stored.startswith(prefix)
    rest = stored[len(prefix):]
    if block.kind == HEADERS:
        assert rest == content
    else:
        assert rest == content[: block.end] + b"\r\n" + content[block.end:]


@pytest.mark.parametrize(
    ("host", "mid"),
    [("mx.test", "<Q@mx.test>"), ("vm", "<Q@vm>"), ("a b<c>@d", "<Q@abcd>"), ("...", "<Q@localhost>")],
)
def test_message_id(host: str, mid: str) -> None:
    assert message_id("Q", host) == mid
