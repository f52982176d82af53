"""Golden tests of the queue record codec: one table drives encode and decode.

The LEGACY bytes were captured from the encoder as it was before the codec had a
module of its own (``Envelope.encode`` in ``spool/queue.py``) and before issue 12
named mailboxes ``<domain>/<local>``, so a queue written by an older Buzón must
keep reading, into the new layout; CASES are today's records. Each case is then decoded whole, grown one
byte at a time (h11's ``tr()``), and with bytes after it; hostile records name
the field that is wrong.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from buzon.directory import accept_all
from buzon.net import format_peer
from buzon.smtp.syntax import SyntaxFault, parse_mail, parse_rcpt
from buzon.spool import record
from buzon.spool.queue import new_queue_id
from buzon.spool.record import (
    MAGIC,
    MAX_HEADER,
    MAX_RECIPIENTS,
    BadField,
    BadHeader,
    BadJson,
    Envelope,
    SpoolCorrupt,
    TruncatedRecord,
    decode_header,
    encode,
    parse_segment,
)

TYPICAL = Envelope(
    "AGA2BXHGAEKN6XQA", "emilio@example.org", ["bob@example.org"], ["example.org/bob"],
    helo="client.example.org", peer="192.0.2.7:40122", esmtp=True,
    received=1764412800.123456, size=42,
)
# Records of the old layout: read as <domain of the recipient>/<name>.
LEGACY: list[tuple[Envelope, bytes]] = [
    (
        TYPICAL,
        (b'BUZON1 {"queue_id":"AGA2BXHGAEKN6XQA","sender":"emilio@example.org",'
         b'"recipients":["bob@example.org"],"mailboxes":["bob"],"helo":"client.example.org",'
         b'"peer":"192.0.2.7:40122","esmtp":true,"received":1764412800.123456,"size":42}\n'),
    ),
    (   # null reverse-path, every default but received, an integer timestamp
        Envelope("AGA2BXHGAEKN6XQB", "", ["postmaster"], ["localhost/postmaster"], received=0),
        (b'BUZON1 {"queue_id":"AGA2BXHGAEKN6XQB","sender":"","recipients":["postmaster"],'
         b'"mailboxes":["postmaster"],"helo":null,"peer":"","esmtp":false,"received":0,'
         b'"size":0}\n'),
    ),
    (   # quoted local part (its quotes escaped in JSON), domain literal, IPv6 peer
        Envelope(
            "AGA2BXHGAEKN6XQC", "a@[192.0.2.1]",
            ['"Odd.One"@example.org', "Carol.Smith@EXAMPLE.org"],
            ["example.org/odd.one", "example.org/carol.smith"],
            peer="[2001:db8::1]:25", received=1700000000.5, size=3,
        ),
        (b'BUZON1 {"queue_id":"AGA2BXHGAEKN6XQC","sender":"a@[192.0.2.1]",'
         b'"recipients":["\\"Odd.One\\"@example.org","Carol.Smith@EXAMPLE.org"],'
         b'"mailboxes":["odd.one","carol.smith"],"helo":null,"peer":"[2001:db8::1]:25",'
         b'"esmtp":false,"received":1700000000.5,"size":3}\n'),
    ),
    (   # EHLO a<CR>b<NUL><TAB>c<ESC>: aiosmtpd passes these through, so they must read back
        Envelope(
            "ZZZZZZZZZZZZZZZ7", "x@y", ["a@b", "c@d", "e@f"], ["b/a", "d/c", "f/e"],
            helo="a\rb\x00\tc\x1b", peer="?", esmtp=True, received=1.0, size=1,
        ),
        (b'BUZON1 {"queue_id":"ZZZZZZZZZZZZZZZ7","sender":"x@y","recipients":["a@b","c@d","e@f"],'
         b'"mailboxes":["a","c","e"],"helo":"a\\rb\\u0000\\tc\\u001b","peer":"?","esmtp":true,'
         b'"received":1.0,"size":1}\n'),
    ),
    (   # largest size; link-local peer with a scope
        Envelope(
            "AAAAAAAAAAAAAAAA", "r@x", ["r@x"], ["x/r"], helo="h", peer="[fe80::1%eth0]:2525",
            received=1764412800, size=1 << 40,
        ),
        (b'BUZON1 {"queue_id":"AAAAAAAAAAAAAAAA","sender":"r@x","recipients":["r@x"],'
         b'"mailboxes":["r"],"helo":"h","peer":"[fe80::1%eth0]:2525","esmtp":false,'
         b'"received":1764412800,"size":1099511627776}\n'),
    ),
]


def _today(line: bytes, envelope: Envelope) -> bytes:
    """A legacy line as today's encoder writes it: only the mailbox names differ."""
    start = line.index(b'"mailboxes":[')
    end = line.index(b"]", start)
    names = ",".join(f'"{m}"' for m in envelope.mailboxes).encode()
    return line[:start] + b'"mailboxes":[' + names + line[end:]


CASES: list[tuple[Envelope, bytes]] = [(e, _today(line, e)) for e, line in LEGACY]


def test_today_s_record_names_domain_slash_local() -> None:
    assert CASES[0][1] == (
        b'BUZON1 {"queue_id":"AGA2BXHGAEKN6XQA","sender":"emilio@example.org",'
        b'"recipients":["bob@example.org"],"mailboxes":["example.org/bob"],'
        b'"helo":"client.example.org","peer":"192.0.2.7:40122","esmtp":true,'
        b'"received":1764412800.123456,"size":42}\n')


@pytest.mark.parametrize(("envelope", "line"), LEGACY)
def test_a_record_of_the_old_layout_reads_into_the_new(envelope: Envelope, line: bytes) -> None:
    """Upgrade: a queue written before issue 12 delivers to <domain>/<local>."""
    assert decode_header(line) == envelope
    assert parse_segment(line + bytes(range(envelope.size)))[0] == [(0, envelope)] \
        if envelope.size < 256 else True
    assert encode(envelope) == _today(line, envelope)  # written back in today's form


@pytest.mark.parametrize(
    ("recipient", "mailbox"),
    [("b@Bücher.Example", "xn--bcher-kva.example/b"), ("b@[192.0.2.1]", "localhost/b"),
     ("b", "localhost/b"), ("b@x.org.", "x.org/b")],
)
def test_the_domain_of_an_old_mailbox_comes_from_its_recipient(recipient: str, mailbox: str) -> None:
    line = ('BUZON1 {"queue_id":"AGA2BXHGAEKN6XQA","sender":"","recipients":'
            + json.dumps([recipient]) + ',"mailboxes":["b"],"helo":null,"peer":"",'
            '"esmtp":false,"received":0,"size":0}\n').encode()
    assert decode_header(line).mailboxes == [mailbox]


def test_an_unsafe_old_mailbox_name_is_still_refused() -> None:
    line = (b'BUZON1 {"queue_id":"AGA2BXHGAEKN6XQA","sender":"","recipients":["x@y"],'
            b'"mailboxes":["../etc"],"helo":null,"peer":"","esmtp":false,"received":0,"size":0}\n')
    with pytest.raises(BadField, match=r"mailboxes\[0\]"):
        decode_header(line)


def test_utf8_addresses_are_json_escapes_and_read_back() -> None:
    envelope = Envelope("AGA2BXHGAEKN6XQA", "José@example.org", ["用户@例子.测试"],
                        ["xn--fsqu00a.xn--0zwm56d/用户"], received=0)
    line = encode(envelope)
    assert line.isascii() and b"\\u7528" in line
    assert decode_header(line) == envelope
    for bad in ("a\u0085b@x", "a\ud800@x"):  # C1 control, lone surrogate
        envelope.recipients = [bad]
        with pytest.raises(BadField, match="recipients"):
            encode(envelope)

# Cases whose body fits in a test: the record is the header line then `size` bytes.
SMALL = [(e, line + bytes(range(e.size))) for e, line in CASES if e.size < 256]


@pytest.mark.parametrize(("envelope", "line"), CASES)
def test_encode_writes_the_golden_bytes(envelope: Envelope, line: bytes) -> None:
    assert encode(envelope) == line


@pytest.mark.parametrize(("envelope", "line"), CASES)
def test_decode_reads_the_golden_bytes(envelope: Envelope, line: bytes) -> None:
    assert decode_header(line) == envelope


@pytest.mark.parametrize(("envelope", "line"), CASES)
def test_every_proper_prefix_of_a_header_is_truncated(envelope: Envelope, line: bytes) -> None:
    for n in range(len(line)):
        with pytest.raises(TruncatedRecord):
            decode_header(line[:n])


@pytest.mark.parametrize("extra", [b"x", b"\n", b"BUZON1 {}\n", b" trailing\n"])
@pytest.mark.parametrize(("envelope", "line"), CASES)
def test_a_header_with_bytes_after_its_newline_is_refused(
    envelope: Envelope, line: bytes, extra: bytes
) -> None:
    with pytest.raises(BadHeader, match="more than one line"):
        decode_header(line + extra)


@pytest.mark.parametrize(("envelope", "data"), SMALL)
def test_segment_of_one_record_parses_whole(envelope: Envelope, data: bytes) -> None:
    assert parse_segment(data) == ([(0, envelope)], None)


@pytest.mark.parametrize(("envelope", "data"), SMALL)
def test_segment_grown_a_byte_at_a_time_is_never_misread(envelope: Envelope, data: bytes) -> None:
    assert parse_segment(b"") == ([], None)
    for n in range(1, len(data)):
        records, fault = parse_segment(data[:n])
        assert records == [] and isinstance(fault, TruncatedRecord), n
    assert parse_segment(data) == ([(0, envelope)], None)


@pytest.mark.parametrize(
    ("garbage", "fault"),
    [
        (b"x", BadHeader),
        (b"not a record\n", BadHeader),
        (b"\n", BadHeader),
        (b"BUZ", TruncatedRecord),
        (MAGIC + b'{"queue_id":', TruncatedRecord),
        (MAGIC + b"{}\n", BadField),
        (b"\xff" * 20, BadHeader),
    ],
)
@pytest.mark.parametrize(("envelope", "data"), SMALL)
def test_garbage_after_a_record_keeps_the_record_and_reports_the_fault(
    envelope: Envelope, data: bytes, garbage: bytes, fault: type[SpoolCorrupt]
) -> None:
    records, found = parse_segment(data + garbage)
    assert records == [(0, envelope)]
    assert type(found) is fault


def test_segment_of_several_records_gives_each_offset() -> None:
    data, expected = b"", []
    for envelope, record_bytes in SMALL:
        expected.append((len(data), envelope))
        data += record_bytes
    assert parse_segment(data) == (expected, None)
    # Cut anywhere: the records wholly before the cut, then truncated (or whole at a boundary).
    boundaries = {offset for offset, _ in expected} | {len(data)}
    for n in range(len(data) + 1):
        records, fault = parse_segment(data[:n])
        assert records == [r for r in expected if r[0] < n and _end(r, data) <= n]
        assert (fault is None) == (n in boundaries), n
        assert fault is None or isinstance(fault, TruncatedRecord), n


def _end(entry: tuple[int, Envelope], data: bytes) -> int:
    offset, envelope = entry
    return data.index(b"\n", offset) + 1 + envelope.size


def test_a_record_short_of_its_body_says_how_short() -> None:
    envelope, data = SMALL[0]
    records, fault = parse_segment(SMALL[1][1] + data[:-2])
    assert records == [(0, SMALL[1][0])]
    assert isinstance(fault, TruncatedRecord)
    assert str(fault).endswith(f"has {envelope.size - 2} of its {envelope.size} message octets")


# -- hostile records ---------------------------------------------------------------------

FIELDS: dict[str, Any] = json.loads(CASES[0][1][len(MAGIC):])


def _line(**changes: Any) -> bytes:
    fields = {**FIELDS, **changes}
    return MAGIC + json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _raw(name: str, text: bytes) -> bytes:
    """A header whose field ``name`` holds ``text`` verbatim (JSON that json.dumps won't write)."""
    return _line(**{name: "@@"}).replace(b'"@@"', text)


def _without(name: str) -> bytes:
    return MAGIC + json.dumps({k: v for k, v in FIELDS.items() if k != name}).encode() + b"\n"


BAD_FIELDS: list[Any] = [
    ("queue_id", "../../etc/x"), ("queue_id", "AAAA"), ("queue_id", "aga2bxhgaekn6xqa"),
    ("queue_id", "AGA2BXHGAEKN6XQAA"), ("queue_id", "AGA2BXHGAEKN6XQ1"),
    ("queue_id", "AGA2BXHGAEKN6XQ\n"), ("queue_id", 12345), ("queue_id", None),
    ("queue_id", ["AGA2BXHGAEKN6XQA"]),
    ("sender", "a@b\r\nBcc: eve@example.org"), ("sender", "a\x00b@x"), ("sender", "\x1b[31m@x"),
    ("sender", "a\x7f@x"), ("sender", "\x85@x"), ("sender", "\ud800@x"), ("sender", "a" * 1001),
    ("sender", None),
    ("sender", 0),
    ("recipients", []), ("recipients", "bob@example.org"), ("recipients", {"bob": 1}),
    ("recipients", None), ("recipients", ["bob@x"] * (MAX_RECIPIENTS + 1)),
    ("recipients[0]", ""), ("recipients[0]", 5), ("recipients[0]", "b\r\nob@x"),
    ("recipients[0]", "b\tob@x"), ("recipients[0]", "x" * 1001),
    ("mailboxes", ["bob", "eve"]), ("mailboxes", []), ("mailboxes", "bob"),
    ("mailboxes", None),
    ("mailboxes[0]", ".."), ("mailboxes[0]", "x.org/a/b"), ("mailboxes[0]", ".x"),
    ("mailboxes[0]", "A"), ("mailboxes[0]", "X.org/b"), ("mailboxes[0]", "../b"),
    ("mailboxes[0]", "x.org/"), ("mailboxes[0]", "x.org/bÉ"),
    ("mailboxes[0]", ""), ("mailboxes[0]", "a\\b"), ("mailboxes[0]", "x" * 65),
    ("mailboxes[0]", "b\x00"), ("mailboxes[0]", "bÉ"), ("mailboxes[0]", 7),
    ("helo", "a\nb"), ("helo", "x" * 1001), ("helo", "hé"), ("helo", 5), ("helo", False),
    ("peer", "1.2.3.4:5\r\n"), ("peer", "\x1b[2J"), ("peer", "\x00"), ("peer", "x" * 301),
    ("peer", None), ("peer", 25),
    ("esmtp", 1), ("esmtp", 0), ("esmtp", "true"), ("esmtp", None),
    ("received", -1), ("received", -0.5), ("received", "1"), ("received", True),
    ("received", 253402300800), ("received", 1e300), ("received", 10**400),
    ("received", None), ("received", [1]),
    ("size", -1), ("size", True), ("size", False), ("size", 2**63), ("size", (1 << 40) + 1),
    ("size", "5"), ("size", 5.0), ("size", None),
    ("file_head", -1), ("file_head", True), ("file_head", (1 << 16) + 1), ("file_head", "3"),
    ("file_head", 3.0), ("file_head", [3]),
]


def _changed(name: str, value: Any) -> bytes:
    base, _, index = name.partition("[")
    if index:
        listed = list(FIELDS[base])
        listed[int(index.rstrip("]"))] = value
        return _line(**{base: listed})
    return _line(**{name: value})


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS)
def test_a_bad_field_is_refused_by_name(name: str, value: Any) -> None:
    with pytest.raises(BadField) as caught:
        decode_header(_changed(name, value))
    assert caught.value.field == name
    assert str(caught.value).startswith(f"{name}: ")


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS)
def test_encode_refuses_what_decode_would_refuse(name: str, value: Any) -> None:
    envelope = decode_header(CASES[0][1])
    base, _, index = name.partition("[")
    if index:
        getattr(envelope, base)[int(index.rstrip("]"))] = value
    else:
        setattr(envelope, name, value)
    with pytest.raises(BadField) as caught:
        encode(envelope)
    assert caught.value.field == name


@pytest.mark.parametrize("name", list(FIELDS))
def test_a_missing_field_is_named(name: str) -> None:
    with pytest.raises(BadField, match=f"^{name}: missing") as caught:
        decode_header(_without(name))
    assert caught.value.field == name


@pytest.mark.parametrize(
    ("line", "fault", "message"),
    [
        (_line(extra=1), BadField, "^'extra': unknown field"),
        (_line(Size=42), BadField, "^'Size': unknown field"),
        # Python's json keeps the last of a repeated key; a human or jq may read the first.
        (_line()[:-2] + b',"mailboxes":["root"]}\n', BadField, "^mailboxes: appears more than"),
        (_line()[:-2] + b',"x":1,"x":2}\n', BadField, "^'x': appears more than once"),
        (_raw("received", b"NaN"), BadJson, "NaN"),
        (_raw("received", b"Infinity"), BadJson, "Infinity"),
        (_raw("received", b"-Infinity"), BadJson, "-Infinity"),
        (_raw("received", b"1e400"), BadField, "^received: "),  # json reads it as inf
        (_raw("size", b"1" + b"0" * 5000), BadJson, "not JSON"),  # past int's digit limit
        (_raw("size", b"[42]"), BadField, r"^size: .*\[42\]"),
        (_raw("size", b'{"a":1}'), BadField, "^size: "),
        (_line().replace(b"bob@", b"b\xffb@"), BadJson, "non-ASCII octet"),
        (_line().replace(b"bob@", "bé@".encode()), BadJson, "non-ASCII octet"),
        (_line().replace(b"bob@", b"b\\u0085b@"), BadField, r"^recipients\[0\]: "),  # C1
        (_line().replace(b"bob@", b"b\\ud800b@"), BadField, r"^recipients\[0\]: "),
        (MAGIC + b"[]\n", BadJson, "JSON list, not an object"),
        (MAGIC + b'"x"\n', BadJson, "JSON str, not an object"),
        (MAGIC + b"null\n", BadJson, "JSON NoneType, not an object"),
        (MAGIC + b"7\n", BadJson, "JSON int, not an object"),
        (MAGIC + b"\n", BadJson, "not JSON"),
        (MAGIC + b'{"queue_id":\n', BadJson, "not JSON"),
        (MAGIC + b"{}{}\n", BadJson, "not JSON"),
        # json recurses per level: a RecursionError here would stop the server's start-up.
        (MAGIC + b"[" * 100_000 + b"\n", BadJson, "nested too deeply"),
        (_raw("helo", b'{"a":' * 5000), BadJson, "nested too deeply"),
        (MAGIC + b"{}\n", BadField, "^queue_id: missing"),
        (b"BUZON2 " + _line()[7:], BadHeader, "does not start with"),
        (b"buzon1 " + _line()[7:], BadHeader, "does not start with"),
        (_line()[7:], BadHeader, "does not start with"),
        (b"\n", BadHeader, "does not start with"),
        (b" " + _line(), BadHeader, "does not start with"),
    ],
)
def test_a_hostile_header_is_refused(line: bytes, fault: type[SpoolCorrupt], message: str) -> None:
    with pytest.raises(fault, match=message):
        decode_header(line)


def test_json_whitespace_is_not_a_fault() -> None:
    # The fields are what is checked; json's own spacing (here a CR left by a
    # hand edit) changes none of them.
    assert decode_header(MAGIC + b" " + CASES[0][1][7:-1] + b"\r\n") == TYPICAL


def test_every_fault_is_a_value_error_and_has_its_docstring_as_default_message() -> None:
    for fault in (SpoolCorrupt, TruncatedRecord, BadHeader, BadJson):
        assert issubclass(fault, ValueError)
        assert str(fault()) == fault.__doc__
    assert issubclass(BadField, SpoolCorrupt)


def test_a_hostile_value_is_shown_escaped_and_short() -> None:
    with pytest.raises(BadField) as caught:
        decode_header(_line(sender="\x1b]0;owned\x07" + "a" * 200))
    text = str(caught.value)
    assert "\x1b" not in text and "\\x1b" in text and len(text) < 160


def test_a_header_longer_than_max_header_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = CASES[0][1]
    monkeypatch.setattr(record, "MAX_HEADER", len(line))
    assert decode_header(line) == TYPICAL
    assert encode(TYPICAL) == line
    monkeypatch.setattr(record, "MAX_HEADER", len(line) - 1)
    with pytest.raises(BadHeader, match="longer than"):
        decode_header(line)
    with pytest.raises(BadHeader, match="longer than"):
        encode(TYPICAL)
    records, fault = parse_segment(line + b"x" * 42)
    assert records == [] and isinstance(fault, BadHeader)


def test_max_header_holds_the_largest_envelope_smtp_can_produce() -> None:
    # A quoted local part of 64 characters (the mailbox alphabet allows no escapes
    # in it any more) at a 255-octet domain literal full of quotes (the JSON
    # doubles every quote).
    # Issue 12: in development mode (no BUZON_DOMAINS) a domain literal is the
    # server's own domain: its mailbox is <host name, up to 253 octets>/<local>.
    local, literal = '"' + "x" * 64 + '"', "[" + '"' * 253 + "]"
    address = parse_rcpt(f"TO:<{local}@{literal}>", extended=False).address
    host = ".".join(["h" * 63] * 4)[:253]
    (mailbox,) = accept_all(host).resolve(address).mailboxes
    assert (len(address), mailbox) == (322, host + "/" + "x" * 64)
    envelope = Envelope(new_queue_id(), "s" * 989, [address], [mailbox], helo="\x00" * 996,
                        peer="[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%interface1234567]:65535")
    one = len(encode(envelope))
    envelope.recipients, envelope.mailboxes = [address, address], [mailbox, mailbox]
    each = len(encode(envelope)) - one
    assert one + each * (MAX_RECIPIENTS - 1) <= MAX_HEADER


# -- what the SMTP side produces always reads back ---------------------------------------

_atext = st.sampled_from("abcXYZ019!#$%&'*+-/=?^_`{|}~")
_atom = st.text(_atext, min_size=1, max_size=8)
_dot_string = st.lists(_atom, min_size=1, max_size=4).map(".".join)
_qchar = st.sampled_from([" ", "a", "Z", "@", "(", "\\\\", '\\"', "\\a", ".", ","])
_quoted = st.lists(_qchar, max_size=12).map(lambda q: '"' + "".join(q) + '"')
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join) | st.sampled_from(
    ["[192.0.2.1]", "[IPv6:2001:db8::1]", "[!~\"]", "example.org."]
)
_address = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", _dot_string | _quoted, _domain),
    _dot_string,  # a bare local part, as the seed's MAIL FROM: emilio
    st.just("postmaster"),
)
_route = st.sampled_from(["", "@relay.example:", "@a,@b.example:"])
# A HELO argument as aiosmtpd hands it over: ASCII, split at LF, stripped the bytes way.
_helo = st.text(st.characters(max_codepoint=0x7F, exclude_characters="\n"), max_size=996).map(
    lambda text: text.encode().strip().decode()
).filter(bool)
_peer = st.one_of(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535)),
    st.tuples(
        st.builds(lambda ip, scope: f"{ip}{scope}", st.ip_addresses(v=6).map(str),
                  st.sampled_from(["", "%eth0", "%1"])),
        st.integers(1, 65535), st.just(0), st.just(0),
    ),
    st.none(),
).map(format_peer)


_EVERYONE = accept_all("mx.test")  # the directory with no BUZON_DOMAINS, no users file


@st.composite
def smtp_envelopes(draw: st.DrawFn) -> Envelope:
    bracket = draw(st.booleans())
    sender_text = draw(_address | st.just(""))
    if bracket or not sender_text:
        arg = f"FROM:<{draw(_route)}{sender_text}>"
    else:
        arg = f"FROM:{sender_text}"
    try:
        sender = parse_mail(arg, extended=draw(st.booleans()), max_size=1 << 20).address
        recipients, mailboxes = [], []
        for text in draw(st.lists(_address, min_size=1, max_size=5)):
            address = parse_rcpt(f"TO:<{draw(_route)}{text}>", extended=False).address
            lookup = _EVERYONE.resolve(address)
            assume(lookup.refusal is None)
            mailboxes.extend(lookup.mailboxes)
            recipients.append(address)
    except SyntaxFault:
        assume(False)
    return Envelope(
        queue_id=new_queue_id(draw(st.floats(0, 2**47 / 1000, allow_nan=False))),
        sender=sender, recipients=recipients, mailboxes=mailboxes,
        helo=draw(st.none() | _helo), peer=draw(_peer), esmtp=draw(st.booleans()),
        received=draw(st.floats(0, 4e9) | st.integers(0, 2**32) | st.just(time.time())),
        size=draw(st.integers(0, 1 << 31)),
    )


@settings(max_examples=300, deadline=None)
@given(smtp_envelopes())
def test_every_envelope_smtp_can_build_reads_back(envelope: Envelope) -> None:
    line = encode(envelope)
    assert decode_header(line) == envelope
    body = b"m" * min(envelope.size, 4096)
    records, fault = parse_segment(line + body)
    if len(body) == envelope.size:
        assert (records, fault) == ([(0, envelope)], None)
    else:
        assert records == [] and isinstance(fault, TruncatedRecord)


def test_the_longest_sender_a_command_line_holds_reads_back() -> None:
    # aiosmtpd's reader (limit 1001) takes at most 1001 octets before the LF, whatever
    # BUZON_MAX_LINE_LENGTH says, so 'MAIL FROM:' leaves at most 991 for the address.
    domain = ".".join(["b" * 63] * 4)  # 255 octets, the most _valid_address takes
    sender = parse_mail(f"FROM:{'a' * 735}@{domain}", extended=True, max_size=1).address
    assert len("MAIL FROM:" + sender) == 1001
    envelope = Envelope(new_queue_id(), sender, ["r@x"], ["x/r"], helo="h" * 996)
    assert decode_header(encode(envelope)) == envelope


def test_new_queue_ids_are_valid_queue_ids() -> None:
    for now in (0.0, time.time(), 2**48 / 1000 - 0.001, 2**48 / 1000):
        envelope = Envelope(new_queue_id(now), "", ["r"], ["mx.test/r"])
        assert decode_header(encode(envelope)).queue_id == envelope.queue_id


def test_a_record_without_file_head_is_the_old_format_byte_for_byte() -> None:
    envelope, line = CASES[0]
    assert envelope.file_head is None
    assert encode(envelope) == line
    assert b"file_head" not in line


def test_file_head_is_written_last_and_read_back() -> None:
    envelope = decode_header(CASES[0][1])
    envelope.file_head = 61
    line = encode(envelope)
    assert line.endswith(b',"size":42,"file_head":61}\n')
    assert decode_header(line).file_head == 61


def test_a_segment_of_records_in_files_of_their_own_holds_only_their_lines() -> None:
    first, second, third = (decode_header(CASES[0][1]) for _ in range(3))
    first.file_head, first.size = 61, 100_000  # its 100,000 bytes are in its own file
    third.file_head, third.size = 0, 7
    second.queue_id, third.queue_id = "AGA2BXHGAEKN6XQB", "AGA2BXHGAEKN6XQC"
    second.size = 5
    data = encode(first) + encode(second) + b"hello" + encode(third)
    records, fault = parse_segment(data)
    assert fault is None
    assert [(offset, e.queue_id, e.file_head) for offset, e in records] == [
        (0, first.queue_id, 61),
        (len(encode(first)), second.queue_id, None),
        (len(encode(first)) + len(encode(second)) + 5, third.queue_id, 0),
    ]
