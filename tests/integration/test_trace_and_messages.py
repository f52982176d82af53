"""Issue 12, end to end: Received: at intake, messages readers can read, long lines, SMTPUTF8.

Every test runs the real server on loopback and a real client (a raw socket
client or ``smtplib``), and reads what landed in the Maildir with Python's
``email`` parser. Mailboxes are found by globbing ``mail_root`` (the layout is
``mail/<domain>/<local>/``).
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, body_of, code, wait_for

# The field as stored, folding included (the parser would unfold it).
RECEIVED_V4 = re.compile(
    rb"\r\nReceived: from client\.example \(localhost \[127\.0\.0\.1\]\)\r\n"
    rb"\tby mx\.test \(Buzon\) with ESMTP id (?P<id>[A-Z2-7]{16})\r\n"
    rb"\tfor <(?P<rcpt>[^>]+)>; (?P<date>\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000)\r\n"
)


def _files(root: Path, local: str) -> list[Path]:
    """Delivered files of the mailbox ``local`` in any domain folder (or the old layout)."""
    return sorted(p for p in root.rglob("new/*") if p.parent.parent.name == local)


def _one(root: Path, local: str) -> Path:
    assert wait_for(lambda: len(_files(root, local)) == 1), list(root.rglob("new/*"))
    (path,) = _files(root, local)
    return path


def _send(port: int, rcpts: list[str], data: bytes, *, host: str = "127.0.0.1",
          greeting: str = "EHLO client.example", mail: str = "MAIL FROM:<a@example.org>") -> str:
    with LineClient(port, host=host) as c:
        c.reply()
        assert code(c.cmd(greeting)) == "250"
        assert code(c.cmd(mail)) == "250 2.1.0"
        for rcpt in rcpts:
            assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5", rcpt
        assert code(c.cmd("DATA")) == "354"
        c.send(data)
        reply = c.reply()
        c.cmd("QUIT")
    assert code(reply) == "250 2.0.0", reply
    return reply.rsplit(" ", 1)[1]


def _parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


# --- Received: at intake (RFC 5321 §4.4) ----------------------------------------------------
def test_received_ipv4_in_the_standard_form(server: RunningServer) -> None:
    queue_id = _send(server.port, ["trace@example.org"], b"Subject: t\r\n\r\nbody\r\n.\r\n")
    path = _one(server.mail_root, "trace")
    match = RECEIVED_V4.search(path.read_bytes())
    assert match, path.read_bytes()
    assert (match["id"], match["rcpt"]) == (queue_id.encode(), b"trace@example.org")
    message = _parse(path)
    assert len(message.get_all("Received")) == 1
    # The Date: Buzón added is the same moment (the 250).
    assert message["Date"] == match["date"].decode()
    assert message["Message-ID"] == f"<{queue_id}@mx.test>"


def test_received_ipv6_as_an_ipv6_literal(server: RunningServer) -> None:
    queue_id = _send(server.port, ["six@example.org"], b"Subject: t\r\n\r\nbody\r\n.\r\n",
                     host="::1", greeting="HELO six.example")
    data = _one(server.mail_root, "six").read_bytes()
    # The name is what ::1 resolves to and back ("unknown" here); HELO: "with SMTP".
    assert re.search(
        rb"\r\nReceived: from six\.example \([\w.-]+ \[IPv6:::1\]\)\r\n\tby mx\.test \(Buzon\)"
        rb" with SMTP id " + queue_id.encode() + rb"\r\n\tfor <six@example\.org>; ", data), data


def test_reverse_dns_off_names_every_client_unknown(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(reverse_dns=False)
    _send(server.port, ["off@example.org"], b"Subject: t\r\n\r\nbody\r\n.\r\n")
    received = str(_parse(_one(server.mail_root, "off"))["Received"])
    assert received.startswith("from client.example (unknown [127.0.0.1])"), received


def test_the_queued_message_holds_received_so_the_transform_sees_it(
    make_server: Callable[..., RunningServer],
) -> None:
    """``tac`` reverses the queued lines: Received: among them proves it was queued."""
    server = make_server(transform="tac")
    _send(server.port, ["seen@example.org"], b"Subject: t\r\n\r\nbody\r\n.\r\n")
    data = _one(server.mail_root, "seen").read_bytes()
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: ") and lines[1].startswith(b"Delivered-To: ")
    assert lines[2:4] == [b"body", b""]
    assert lines[-2].startswith(b"Received: from client.example (localhost [127.0.0.1])")
    assert data.count(b"Received:") == 1  # stored once, never again at delivery


def test_several_recipients_one_received_without_for(server: RunningServer) -> None:
    queue_id = _send(server.port, ["m1@example.org", "m2@example.org"],
                     b"Subject: t\r\n\r\nbody\r\n.\r\n")
    for local in ("m1", "m2"):
        [received] = _parse(_one(server.mail_root, local)).get_all("Received")
        assert f"id {queue_id};" in str(received) and "for <" not in str(received)


# --- messages as readers expect them ----------------------------------------------------------
def test_a_headerless_message_reads_back_with_its_body_date_and_message_id(
    server: RunningServer,
) -> None:
    body = b"Hello Bob,\r\nthis message has no header block at all.\r\n\r\nSee you.\r\n"
    queue_id = _send(server.port, ["nohead@example.org"], body + b".\r\n")
    path = _one(server.mail_root, "nohead")
    message = _parse(path)
    assert message.get_content().replace("\r\n", "\n") == body.decode().replace("\r\n", "\n")
    assert message["Message-ID"] == f"<{queue_id}@mx.test>"
    assert email.utils.parsedate_to_datetime(message["Date"]).utcoffset().total_seconds() == 0
    assert not message.defects
    assert body_of(path, headerless=True) == body


def test_a_message_with_date_and_message_id_is_kept_byte_identical(
    server: RunningServer,
) -> None:
    sent = (b"Date: Mon, 01 Jan 2024 09:00:00 +0100\r\nMessage-ID: <keep@client.example>\r\n"
            b"From: Alice <a@example.org>\r\nSubject: as sent\r\n\r\nbody line\r\n\r\nend\r\n")
    _send(server.port, ["keep@example.org"], sent + b".\r\n")
    path = _one(server.mail_root, "keep")
    data = path.read_bytes()
    assert data.endswith(b"\r\n" + sent)  # the client's bytes, whole, after our trace fields
    assert data.count(b"Date:") == 1 and data.count(b"Message-ID:") == 1
    message = _parse(path)
    assert message["Date"] == "Mon, 01 Jan 2024 09:00:00 +0100"
    assert message["Message-ID"] == "<keep@client.example>"
    assert body_of(path) == sent


def test_fields_then_body_without_a_blank_line_gets_one(server: RunningServer) -> None:
    _send(server.port, ["mixed@example.org"], b"Subject: quick note\r\nthe body\r\n.\r\n")
    message = _parse(_one(server.mail_root, "mixed"))
    assert message["Subject"] == "quick note"
    assert message.get_content().strip() == "the body"
    assert not message.defects


def test_missing_headers_are_not_added_when_switched_off(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(add_missing_headers=False)
    _send(server.port, ["plain@example.org"], b"just a body\r\n.\r\n")
    message = _parse(_one(server.mail_root, "plain"))
    assert message["Date"] is None and message["Message-ID"] is None
    assert message.get_content().strip() == "just a body"  # the empty line is still added


# --- the body line limit (BUZON_LONG_LINES) ------------------------------------------------
@pytest.mark.parametrize("octets", [999, 1000, 1001, 100_000])
def test_long_lines_are_accepted_and_stored_intact_by_default(
    server: RunningServer, octets: int,
) -> None:
    line = (b"0123456789" * (octets // 10 + 1))[:octets]
    body = b"Subject: long\r\n\r\n" + line + b"\r\n..dot after it\r\n"
    _send(server.port, [f"long{octets}@example.org"], body + b".\r\n")
    path = _one(server.mail_root, f"long{octets}")
    assert body_of(path) == body.replace(b"\r\n..", b"\r\n.")


def test_long_lines_refused_with_500_when_set_to_refuse(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(long_lines="refuse")
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<refuse@example.org>")
        assert code(c.cmd("DATA")) == "354"
        c.send(b"Subject: long\r\n\r\n" + b"x" * 1000 + b"\r\n.\r\n")
        assert c.reply() == "500 5.5.2 Error: line too long"
        # 999 octets of text (1,001 with CRLF, the transparency dot's allowance) pass.
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<refuse@example.org>")
        c.cmd("DATA")
        c.send(b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n.\r\n")
        assert code(c.reply()) == "250 2.0.0"
    assert wait_for(lambda: len(_files(server.mail_root, "refuse")) == 1)


# --- SMTPUTF8 (RFC 6531) ---------------------------------------------------------------------
def test_smtputf8_is_advertised_and_utf8_mail_lands_byte_exact(server: RunningServer) -> None:
    subject = "Mañana: café für José ✓"
    wire = (f"From: José <josé@example.org>\r\nTo: <utf8@example.org>\r\nSubject: {subject}\r\n"
            "\r\nCuerpo en UTF-8: ñandú\r\n").encode()
    with LineClient(server.port) as c:
        c.reply()
        assert "250-SMTPUTF8" in c.cmd("EHLO client.example").split("\n")
        assert c.cmd("MAIL FROM:<josé@example.org>") == (
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address")
        assert code(c.cmd("MAIL FROM:<josé@example.org> SMTPUTF8 BODY=8BITMIME")) == "250 2.1.0"
        assert code(c.cmd("RCPT TO:<utf8@example.org>")) == "250 2.1.5"
        assert code(c.cmd("DATA")) == "354"
        c.send(wire + b".\r\n")
        assert code(c.reply()) == "250 2.0.0"
    path = _one(server.mail_root, "utf8")
    data = path.read_bytes()
    assert data.startswith("Return-Path: <josé@example.org>\r\n".encode())
    assert body_of(path).endswith(wire)
    message = _parse(path)
    assert message["Subject"] == subject
    assert " with UTF8SMTP id " in str(message["Received"])


def test_a_utf8_recipient_reaches_a_mailbox_with_smtplib(server: RunningServer) -> None:
    """Python's smtplib as the client: SMTPUTF8 on MAIL, a UTF-8 local part in RCPT."""
    message = EmailMessage()
    message["From"] = "Zoë <zoë@example.org>"
    message["To"] = "José <josé@example.org>"
    message["Subject"] = "¿Qué tal?"
    message.set_content("Hola José\n")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("smtputf8")
        refused = client.send_message(message, mail_options=["SMTPUTF8"])
    assert refused == {}
    assert wait_for(lambda: [p for p in server.mail_root.rglob("new/*")]), "nothing delivered"
    (path,) = server.mail_root.rglob("new/*")
    got = _parse(path)
    assert got["Delivered-To"] == "josé@example.org"
    assert got["Subject"] == "¿Qué tal?" and got.get_content().rstrip() == "Hola José"
    assert re.search(r"with UTF8SMTP id [A-Z2-7]{16}\s+for <josé@example\.org>;",
                     str(got["Received"]))


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("EHLO héllo.example", "501 5.5.2 Error: HELO/EHLO name must be ASCII (IDN as A-labels)"),
        ("HELO bücher.example", "501 5.5.2 Error: HELO/EHLO name must be ASCII (IDN as A-labels)"),
        ("MAIL FROM:<josé@example.org> SMTPUTF8=1", "501 5.5.4 Bad parameter syntax: SMTPUTF8=1"),
    ],
)
def test_smtputf8_refusals(server: RunningServer, command: str, reply: str) -> None:
    with LineClient(server.port) as c:
        c.reply()
        if not command.startswith(("EHLO", "HELO")):
            c.cmd("EHLO client.example")
        assert c.cmd(command) == reply


def test_utf8_recipient_without_smtputf8_and_bytes_that_are_not_utf8(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        assert code(c.cmd("MAIL FROM:<a@example.org>")) == "250 2.1.0"
        assert c.cmd("RCPT TO:<josé@example.org>") == (
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address")
        c.cmd("RSET")
        assert code(c.cmd("MAIL FROM:<a@example.org> SMTPUTF8")) == "250 2.1.0"
        c.send(b"RCPT TO:<jos\xe9@example.org>\r\n")  # Latin-1, not UTF-8
        assert c.reply() == "501 5.1.3 Bad recipient address syntax"
        assert code(c.cmd("NOOP")) == "250 2.0.0"  # the session goes on
