"""Issue 14: the access log records refusals, in text or JSON lines.

Before, a ``552``, a ``500 line too long`` or a ``550`` left only the connect and
disconnect lines. Each test runs a real server on loopback and reads the log file
back after the server stopped (which flushes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from helpers import LineClient, RunningServer, code

# A text refusal: the timestamp and nine tokens, whatever the client sent.
REFUSED_FIELDS = ["refused", "peer", "cmd", "code", "enhanced", "from", "to", "addr", "reason"]


def _lines(server: RunningServer, log_file: Path) -> list[str]:
    server.stop()
    return log_file.read_text().splitlines()


def _refusals(lines: list[str]) -> list[dict[str, str]]:
    """Each text refusal line parsed back into its fixed fields."""
    out = []
    for line in lines:
        _, *fields = line.split(" ")
        if fields[0] != "refused":
            continue
        assert len(fields) == len(REFUSED_FIELDS), line
        parsed = {"refused": fields[0], "peer": fields[1], "enhanced": fields[4]}
        for name, field in zip(REFUSED_FIELDS, fields, strict=True):
            if name not in parsed:
                key, eq, value = field.partition("=")
                assert (key, eq) == (name, "="), line
                parsed[name] = value
        out.append(parsed)
    return out


def test_each_refusal_gets_a_line_with_its_code(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    log_file = tmp_path / "access.log"
    server = make_server(access_log_file=log_file, max_line_length=100, max_message_size=2048)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        assert code(c.cmd("RCPT TO:<bob@example.org>")) == "503 5.5.1"
        assert code(c.cmd("MAIL FROM:<a@example.org> SIZE=4096")) == "552 5.3.4"
        assert code(c.cmd("NOOP " + "x" * 200)) == "500 5.5.2"
        # Past the reader's own limit (1,001 bytes) the line is read in pieces:
        # the refusal still names the verb at its head.
        assert code(c.cmd("HELO " + "y" * 5000)) == "500 5.5.2"
        assert code(c.cmd("MAIL FROM:<a@example.org>")) == "250 2.1.0"
        assert code(c.cmd("RCPT TO:<bob@example.org>")) == "250 2.1.5"
        assert code(c.cmd("RCPT TO:<-bad@example.org>")) == "550 5.1.1"
        assert code(c.cmd("DATA")) == "354"
        assert code(c.cmd("x" * 3000 + "\r\n.")) == "552 5.3.4"
        c.cmd("QUIT")
        peer = f"127.0.0.1:{c.sock.getsockname()[1]}"
    lines = _lines(server, log_file)
    refused = _refusals(lines)
    assert [(r["cmd"], r["code"], r["enhanced"]) for r in refused] == [
        ("RCPT", "503", "5.5.1"),
        ("MAIL", "552", "5.3.4"),
        ("NOOP", "500", "5.5.2"),
        ("HELO", "500", "5.5.2"),
        ("RCPT", "550", "5.1.1"),
        ("DATA", "552", "5.3.4"),
    ]
    assert all(r["peer"] == peer for r in refused)
    assert refused[0]["from"] == "" and refused[0]["to"] == ""
    assert refused[1]["addr"] == "<a@example.org>"
    assert refused[2]["reason"] == r"Error:\x20line\x20too\x20long"
    assert refused[4] == {**refused[4], "from": "<a@example.org>", "to": "<bob@example.org>",
                          "addr": "<-bad@example.org>"}
    assert (refused[5]["from"], refused[5]["to"]) == ("<a@example.org>", "<bob@example.org>")
    # The events around them are unchanged.
    events = [line.split(" ", 1)[1] for line in lines]
    assert events[0] == f"connect {peer}"
    assert re.fullmatch(rf"disconnect {re.escape(peer)} duration=\d+\.\d{{3}}s", events[-1])


def test_a_quoted_local_part_stays_one_field(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """A space, a quote, ``>`` or ``,`` in an address never splits or forges a field."""
    log_file = tmp_path / "access.log"
    server = make_server(access_log_file=log_file)
    sender = '"a b, \\"q\\" to=x"@example.org'
    with LineClient(server.port) as c:
        c.reply()
        assert code(c.cmd('MAIL FROM:<"a b> to=<x>"@example.org>')) == "501 5.1.7"
        assert code(c.cmd(f"MAIL FROM:<{sender}>")) == "250 2.1.0"
        assert code(c.cmd('RCPT TO:<"x y"@example.org>')) == "550 5.1.1"
        assert code(c.cmd("RCPT TO:<bob@example.org>")) == "250 2.1.5"
        c.cmd("DATA")
        assert code(c.cmd("Subject: s\r\n\r\nbody\r\n.")) == "250 2.0.0"
        c.cmd("QUIT")
    lines = _lines(server, log_file)
    first, second = _refusals(lines)  # each parsed back into exactly nine fields
    assert first["addr"] == r"<\x22a\x20b\x3e\x20to=\x3cx\x3e\x22@example.org>"
    assert (first["from"], first["to"]) == ("", "")
    escaped_sender = r"<\x22a\x20b\x2c\x20\x5c\x22q\x5c\x22\x20to=x\x22@example.org>"
    assert second["from"] == escaped_sender
    assert second["addr"] == r"<\x22x\x20y\x22@example.org>"
    (accepted,) = [ln for ln in lines if " accepted " in ln]
    fields = accepted.split(" ")
    assert [f.split("=", 1)[0] for f in fields[3:]] == ["id", "from", "to", "size"], accepted
    assert fields[4] == "from=" + escaped_sender


def test_json_lines_carry_every_field(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    log_file = tmp_path / "access.log"
    server = make_server(access_log_file=log_file, access_log_format="json")
    sender = '"a b, \\"q\\""@example.org'
    with LineClient(server.port) as c:
        c.reply()
        assert code(c.cmd(f"MAIL FROM:<{sender}>")) == "250 2.1.0"
        assert code(c.cmd("RCPT TO:<bob@example.org>")) == "250 2.1.5"
        assert code(c.cmd("RCPT TO:<-bad@example.org>")) == "550 5.1.1"
        c.cmd("DATA")
        queue_id = c.cmd("Subject: x\r\n\r\nhello\r\n.").rsplit(" ", 1)[1]
        c.cmd("QUIT")
        peer = f"127.0.0.1:{c.sock.getsockname()[1]}"
    records = [json.loads(line) for line in _lines(server, log_file)]
    assert [r["event"] for r in records] == ["connect", "refused", "accepted", "disconnect"]
    assert all(r["peer"] == peer and r["ts"].endswith("Z") for r in records)
    assert records[1] == {
        "ts": records[1]["ts"], "event": "refused", "peer": peer, "cmd": "RCPT", "code": 550,
        "enhanced": "5.1.1", "reason": "Recipient address rejected: unsafe mailbox name",
        "from": sender, "to": ["bob@example.org"], "addr": "-bad@example.org",
    }
    assert records[2] == {
        "ts": records[2]["ts"], "event": "accepted", "peer": peer, "queue_id": queue_id,
        "from": sender, "to": ["bob@example.org"], "size": 21,
    }
    assert set(records[3]) == {"ts", "event", "peer", "duration"}
    assert isinstance(records[3]["duration"], float)


def test_an_idle_timeout_is_not_a_refused_command(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """A 421 from a timer between commands answers no command: no refused line."""
    log_file = tmp_path / "access.log"
    server = make_server(access_log_file=log_file, idle_timeout=0.5)
    with LineClient(server.port) as c:
        c.reply()
        assert code(c.cmd("NOOP")) == "250 2.0.0"
        assert code(c.reply()) == "421 4.4.2"
    assert not [ln for ln in _lines(server, log_file) if " refused " in ln]
