"""SPEC §3 end to end: what lands in the Maildir, byte for byte, and who can read it."""

from __future__ import annotations

import mailbox
import os
import re
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, body_of, code, maildir_files


def _send(server: RunningServer, rcpts: list[str], data: bytes, sender: str = "a@example.org") -> str:
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        assert code(c.cmd(f"MAIL FROM:<{sender}> BODY=8BITMIME")) == "250 2.1.0"
        for rcpt in rcpts:
            assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5", rcpt
        assert code(c.cmd("DATA")) == "354"
        c.send(data)
        reply = c.reply()
        assert code(reply) == "250 2.0.0", reply
        c.cmd("QUIT")
    server.wait_idle()
    return reply.rsplit(" ", 1)[1]


def test_body_is_byte_exact_after_dot_unstuffing_with_8bit_and_odd_lines(
    server: RunningServer,
) -> None:
    wire = (
        b"Subject: =?utf-8?q?ma=C3=B1ana?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"..leading dot was stuffed\r\n"
        b"...two dots stuffed to three\r\n"
        b"ma\xc3\xb1ana \xe9\xff raw 8-bit\r\n"
        b". \r\n"
        b"tab\there, trailing space \r\n"
        b"\r\n"
        b".\r\n"
    )
    expected = (
        b"Subject: =?utf-8?q?ma=C3=B1ana?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b".leading dot was stuffed\r\n"
        b"..two dots stuffed to three\r\n"
        b"ma\xc3\xb1ana \xe9\xff raw 8-bit\r\n"
        b" \r\n"
        b"tab\there, trailing space \r\n"
        b"\r\n"
    )
    _send(server, ["exact@example.org"], wire)
    (path,) = maildir_files(server.mail_root, "exact")
    assert body_of(path) == expected


def test_trace_headers_are_prepended_per_recipient(server: RunningServer) -> None:
    queue_id = _send(
        server, ["Bob@Example.org", "carol@example.org"], b"Subject: s\r\n\r\nhi\r\n.\r\n",
        sender="alice@example.org",
    )
    (bob,) = maildir_files(server.mail_root, "bob")
    (carol,) = maildir_files(server.mail_root, "carol")
    head = bob.read_bytes().split(b"Subject:")[0].decode()
    assert head.startswith("Return-Path: <alice@example.org>\r\nDelivered-To: Bob@Example.org\r\n")
    # One Received: for the message, added at intake (RFC 5321 §4.4 form): with two
    # recipients it names neither (Postfix does the same).
    assert re.search(
        rf"\r\nReceived: from client\.example \(localhost \[127\.0\.0\.1\]\)\r\n"
        rf"\tby mx\.test \(Buzon\) with ESMTP id {queue_id};\r\n"
        rf"\t(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d \w\w\w \d{{4}} \d\d:\d\d:\d\d \+0000\r\n", head)
    assert b"Delivered-To: carol@example.org\r\n" in carol.read_bytes()
    # The queued message is one: both copies differ only in Delivered-To.
    assert bob.read_bytes().replace(b"Bob@Example.org", b"carol@example.org") == carol.read_bytes()
    assert body_of(bob) == body_of(carol) == b"Subject: s\r\n\r\nhi\r\n"


def test_python_mailbox_reads_every_message_back(server: RunningServer) -> None:
    for n in range(3):
        _send(server, ["reader@example.org"], f"Subject: n{n}\r\nX-N: {n}\r\n\r\nbody {n}\r\n.\r\n".encode())
    box = mailbox.Maildir(server.mail_root / "example.org" / "reader", factory=None, create=False)
    messages = sorted(box, key=lambda m: m["X-N"])
    assert [m["Subject"] for m in messages] == ["n0", "n1", "n2"]
    assert all(m["Return-Path"] == "<a@example.org>" for m in messages)
    assert messages[2].get_payload().rstrip("\r\n") == "body 2"


def test_maildir_layout_names_and_permissions(server: RunningServer) -> None:
    queue_id = _send(server, ["layout@example.org", "LAYOUT@example.org"], b"x\r\n.\r\n")
    # <mail root>/<domain>/<local> (issue 12): Dovecot's maildir:.../%d/%n.
    assert [p.name for p in server.mail_root.iterdir()] == ["example.org"]
    assert os.stat(server.mail_root / "example.org").st_mode & 0o777 == 0o700
    folder = server.mail_root / "example.org" / "layout"
    assert sorted(p.name for p in folder.iterdir()) == ["cur", "new", "tmp"]
    assert list((folder / "tmp").iterdir()) == []
    # One mailbox named twice (case differs) gets one copy, as Postfix does.
    (path,) = (folder / "new").iterdir()
    assert path.name.split(".")[1] == f"Q{queue_id}R0"
    assert path.name.endswith(".mx.test")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert list((server.settings.data_dir / "spool" / "queue").iterdir()) == []


@pytest.mark.parametrize(
    ("rcpt", "why"),
    [
        ('"../../outside"@example.org', "dot-dot"),
        ('"a/b"@example.org', "slash"),
        ('"a\\\\b"@example.org', "backslash"),
        ('".hidden"@example.org', "leading dot"),
        ('"."@example.org', "dot"),
        ("x" * 65 + "@example.org", "overlong"),
    ],
)
def test_unsafe_mailbox_names_are_refused_and_nothing_leaves_the_root(
    server: RunningServer, tmp_path: Path, rcpt: str, why: str
) -> None:
    before = {p for p in tmp_path.rglob("*")}
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd(f"RCPT TO:<{rcpt}>") == (
            "550 5.1.1 Recipient address rejected: unsafe mailbox name"
        ), why
        assert code(c.cmd("RCPT TO:<safe@example.org>")) == "250 2.1.5"
        c.cmd("DATA")
        assert code(c.cmd("x\r\n.")) == "250 2.0.0"
    server.wait_idle()
    created = {p for p in tmp_path.rglob("*")} - before
    mail = server.mail_root.resolve()
    outside = [p for p in created if not p.resolve().is_relative_to(server.settings.data_dir.resolve())]
    assert outside == []
    assert sorted(str(p.relative_to(mail)) for p in mail.glob("*/*")) == ["example.org/safe"]


@pytest.mark.parametrize("raw", [b'"a\x00b"@example.org', b"a\x01b@example.org", b'"\x7f"@x.org'])
def test_nul_and_control_characters_are_refused(server: RunningServer, raw: bytes) -> None:
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("MAIL FROM:<a@example.org>")
        c.send(b"RCPT TO:<" + raw + b">\r\n")
        assert code(c.reply())[0] == "5"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert not server.mail_root.exists() or list(server.mail_root.iterdir()) == []


def test_a_symlinked_mailbox_is_never_followed(server: RunningServer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    for sub in ("tmp", "new", "cur"):
        (elsewhere / sub).mkdir(parents=True)
    server.mail_root.mkdir(parents=True, exist_ok=True)
    (server.mail_root / "example.org").mkdir()
    (server.mail_root / "example.org" / "trap").symlink_to(elsewhere)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<trap@example.org>")
        c.cmd("DATA")
        assert code(c.cmd("x\r\n.")) == "250 2.0.0"
    # Delivery is deferred (and logged), never written through the link.
    assert list((elsewhere / "new").iterdir()) == []
    assert len(list((server.settings.data_dir / "spool" / "queue").iterdir())) == 1
