"""The access log's lines, both formats, without a server (issue 14)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from buzon.accesslog import REASON_MAX, AccessLog, escape
from buzon.smtp.refusals import _address, _verb

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
EVIL = '\x1b[2J"a b>",<c>\r\n2026-01-01T00:00:00.000Z connect x\\'


def _log(tmp_path: Path, fmt: str = "text") -> tuple[AccessLog, Path]:
    file = tmp_path / "access.log"
    return AccessLog(file, stdout=False, fmt=fmt), file


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a@b.example", "a@b.example"),
        ('"a b"@x', r"\x22a\x20b\x22@x"),
        ("a>,<b", r"a\x3e\x2c\x3cb"),
        ("\\", r"\x5c"),
        ("caf\u00e9\u2603", r"caf\xe9\u2603"),
        ("'=", "'="),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


def test_text_lines_keep_their_fields(tmp_path: Path) -> None:
    log, file = _log(tmp_path)
    log.connect("10.0.0.1:25")
    log.accepted("10.0.0.1:25", "ID1", "a@x", ["b@x", "c@x"], 42)
    log.refused("10.0.0.1:25", "RCPT", "550 5.1.1 Recipient rejected", "a@x", ["b@x"], "-c@x")
    log.refused("10.0.0.1:25", "NOOP", "500 5.5.2 Error: line too long", None, [])
    log.disconnect("10.0.0.1:25", 1.5)
    log.close()
    events = [line.split(" ", 1) for line in file.read_text().splitlines()]
    assert all(re.fullmatch(STAMP, stamp) for stamp, _ in events)
    assert [event for _, event in events] == [
        "connect 10.0.0.1:25",
        "accepted 10.0.0.1:25 id=ID1 from=<a@x> to=<b@x>,<c@x> size=42",
        (
            r"refused 10.0.0.1:25 cmd=RCPT code=550 5.1.1 from=<a@x> to=<b@x> addr=<-c@x>"
            r" reason=Recipient\x20rejected"
        ),
        (
            r"refused 10.0.0.1:25 cmd=NOOP code=500 5.5.2 from= to= addr="
            r" reason=Error:\x20line\x20too\x20long"
        ),
        "disconnect 10.0.0.1:25 duration=1.500s",
    ]


def test_a_hostile_refusal_is_one_line_of_fixed_fields(tmp_path: Path) -> None:
    log, file = _log(tmp_path)
    log.refused(EVIL, EVIL, "555 5.5.4 Unsupported option: " + EVIL * 50, EVIL, [EVIL], EVIL)
    log.close()
    data = file.read_text()
    assert data.count("\n") == 1 and not re.search(r"[\x00-\x1f\x7f]", data[:-1])
    fields = data.split()
    assert len(fields) == 10
    assert [f.split("=", 1)[0] for f in fields[3:]] == [
        "cmd", "code", "5.5.4", "from", "to", "addr", "reason",
    ]
    assert fields[4] == "code=555"
    assert fields[3] == "cmd=" + escape(EVIL[:16])
    # The reason is cut before escaping: at most REASON_MAX characters of it.
    assert len(re.sub(r"\\x[0-9a-f]{2}", "?", fields[9][len("reason="):])) == REASON_MAX


def test_json_lines_parse_back(tmp_path: Path) -> None:
    log, file = _log(tmp_path, "json")
    log.connect(EVIL)
    log.accepted("p:1", "ID1", "", ["b@x"], 7)
    log.refused("p:1", EVIL, "552 5.3.4 Error: too big", EVIL, [EVIL], EVIL)
    log.refused("p:1", "", "500 Error: bad syntax", None, [])
    log.disconnect("p:1", 0.25)
    log.close()
    lines = file.read_text().splitlines()
    assert len(lines) == 5 and all(line.isascii() for line in lines)
    records = [json.loads(line) for line in lines]
    assert all(re.fullmatch(STAMP, r.pop("ts")) for r in records)
    assert records == [
        {"event": "connect", "peer": EVIL},
        {"event": "accepted", "peer": "p:1", "queue_id": "ID1", "from": "", "to": ["b@x"],
         "size": 7},
        {"event": "refused", "peer": "p:1", "cmd": EVIL[:16], "code": 552, "enhanced": "5.3.4",
         "reason": "Error: too big", "from": EVIL, "to": [EVIL], "addr": EVIL},
        {"event": "refused", "peer": "p:1", "cmd": "", "code": 500, "enhanced": "",
         "reason": "Error: bad syntax", "from": None, "to": [], "addr": None},
        {"event": "disconnect", "peer": "p:1", "duration": 0.25},
    ]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text"):
        AccessLog(stdout=False, fmt="xml")


@pytest.mark.parametrize(
    ("line", "verb", "address"),
    [
        (b"rcpt TO:<bob@x>\r\n", "RCPT", "bob@x"),
        (b'MAIL FROM:<"a b>"@x> SIZE=10\r\n', "MAIL", '"a b>"@x'),
        (b"MAIL FROM:bob@x\r\n", "MAIL", None),
        (b"MAIL\r\n", "MAIL", None),
        (b"\r\n", "", None),
        (b"\xff\xfe x\r\n", "\ufffd\ufffd", None),
    ],
)
def test_the_verb_and_address_of_a_refused_command(
    line: bytes, verb: str, address: str | None
) -> None:
    assert _verb(line) == verb
    assert _address(line) == address
