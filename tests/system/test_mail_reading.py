"""Reading the mail (issue 13): smtp → SpamAssassin → Maildir → Dovecot, in the Compose stack.

A stack of its own: the transform chain is SpamAssassin alone and switched on (the
session stack chains tac after it, which scrambles the headers the junk rule reads),
and smtp's recipient directory is the users file, the same one Dovecot logs users in
from. The test adds a user with ``docker compose run --rm admin``, sends over
STARTTLS verified against the CA smtp generated, then reads with ``imaplib`` over TLS
(INBOX has the ham, Junk the GTUBE message), marks the ham ``\\Seen``, and reads it
again with ``poplib``: the bytes are the same everywhere, and the body and every
header line are the ones sent.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import secrets
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from helpers import wait_until
from system.compose_stack import Stack
from system.conftest import running_stack

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
USER = "alice@example.org"
PASSWORD = "correct horse " + secrets.token_hex(4)


@pytest.fixture(scope="module")
def mail_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = {
        "BUZON_TRANSFORM_SIDECARS": "spamassassin:7000",
        "BUZON_TRANSFORM_ENABLED": "true",
        "BUZON_USERS_FILE": "/etc/buzon/users",
    }
    with running_stack(tmp_path_factory, overrides) as stack:
        yield stack


@pytest.fixture(scope="module")
def tls(mail_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A client context that trusts only the CA smtp generated at its first start."""
    pem = mail_stack.compose("exec", "-T", "smtp", "cat", "/var/lib/buzon/tls/ca.pem").stdout
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(pem)
    return ssl.create_default_context(cafile=str(path))


def _message(subject: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"] = "bob@example.net"
    message["To"] = USER
    message["Subject"] = subject
    message["Message-ID"] = f"<{secrets.token_hex(8)}@example.net>"
    message["Date"] = "Sun, 29 Nov 2026 12:00:00 +0000"
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def _send(stack: Stack, context: ssl.SSLContext, rcpt: str, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="client.test",
                      timeout=30) as client:
        client.starttls(context=context)
        client.ehlo("client.test")
        client.mail("bob@example.net")
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
        return client.data(data)


def _header_and_body(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return re.split(rb"\r\n(?![ \t])", head), body


def test_user_added_once_reads_ham_in_inbox_and_gtube_in_junk(
    mail_stack: Stack, tls: ssl.SSLContext,
) -> None:
    stack = mail_stack
    # Unknown until the admin adds the user: one place to add a user, for smtp and imap.
    code, text = _send(stack, tls, USER, _message("too early", "x\n"))
    assert (code, text[:5]) == (550, b"5.1.1"), (code, text)
    added = stack.compose("run", "--rm", "-T", "admin", "user", "add", USER,
                          input_text=PASSWORD + "\n")
    assert f"user add {USER}: done" in added.stdout
    listed = stack.compose("run", "--rm", "-T", "admin", "user", "list").stdout.split()
    assert USER in listed

    ham = _message("lunch", "Shall we have lunch at noon tomorrow?\n")
    spam = _message("offer", f"{GTUBE}\n")
    # The users file is reread within a second: retry the first RCPT until it is.
    wait_until("alice accepted by smtp", lambda: _send(stack, tls, USER, ham)[0] == 250, 30)
    code, text = _send(stack, tls, USER, spam)
    assert code == 250, text

    with imaplib.IMAP4_SSL("127.0.0.1", stack.mail_ports["imaps"], ssl_context=tls,
                           timeout=30) as imap:
        imap.login(USER, PASSWORD)
        status, folders = imap.list()
        assert status == "OK"
        assert any(b"\\Junk" in f and f.endswith(b" Junk") for f in folders), folders

        def count(folder: str) -> int:
            status, data = imap.select(folder, readonly=True)
            assert status == "OK", data
            return int(data[0])

        wait_until("ham and spam filed", lambda: count("INBOX") >= 1 and count("Junk") >= 1, 120)
        assert (count("INBOX"), count("Junk")) == (1, 1)

        imap.select("Junk", readonly=True)
        junk = imap.fetch("1", "(BODY.PEEK[])")[1][0][1]
        imap.select("INBOX")
        inbox = imap.fetch("1", "(BODY.PEEK[])")[1][0][1]
        assert imap.store("1", "+FLAGS", "(\\Seen)")[0] == "OK"
        flags = imap.fetch("1", "(FLAGS)")[1][0]
        assert b"\\Seen" in flags

    # What was sent is what is read: the body byte for byte, every header line present,
    # plus the trace and filter fields the server and SpamAssassin added on top.
    for got, sent, verdict in ((inbox, ham, b"No,"), (junk, spam, b"Yes,")):
        got_headers, got_body = _header_and_body(got)
        sent_headers, sent_body = _header_and_body(sent)
        assert got_body == sent_body
        assert all(h in got_headers for h in sent_headers), (sent_headers, got_headers)
        status = next(h for h in got_headers if h.startswith(b"X-Spam-Status: "))
        assert status.startswith(b"X-Spam-Status: " + verdict)
        received = next(h for h in got_headers if h.startswith(b"Received: from client.test"))
        assert b"with ESMTPS" in received and b"version=TLSv1." in received
    # SpamAssassin scored the message with Buzón's Received: in place (issue 12).
    junk_status = next(h for h in _header_and_body(junk)[0] if h.startswith(b"X-Spam-Status"))
    assert b"NO_RECEIVED" not in junk_status and b"UNPARSEABLE_RELAY" not in junk_status

    # \Seen is Dovecot's rename into cur/ with the S flag, in the volume smtp writes to.
    files = stack.compose("exec", "-T", "imap", "find", "/var/lib/buzon/mail/example.org/alice",
                          "-type", "f").stdout.split()
    assert any(re.search(r"/cur/[^/]+:2,S$", f) for f in files), files
    assert any("/.Junk/" in f for f in files), files

    # POP3 sees the inbox: the same bytes as IMAP.
    pop = poplib.POP3_SSL("127.0.0.1", stack.mail_ports["pop3s"], context=tls, timeout=30)
    try:
        pop.user(USER)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
        lines = pop.retr(1)[1]
        assert b"\r\n".join(lines) + b"\r\n" == inbox
    finally:
        pop.quit()


def test_flags_utf8_search_idle_and_a_utf8_login(mail_stack: Stack, tls: ssl.SSLContext) -> None:
    # What a private Dovecot over Buzón's Maildirs did before this stack (issue 13), kept
    # under test here: \Flagged lands as :2,FS, a UTF-8 SEARCH finds a UTF-8 subject, IDLE
    # reports a message smtp delivers meanwhile, and a UTF-8 user (SMTPUTF8 mailbox name)
    # logs in with the same password file.
    stack, user, password = mail_stack, "josé@example.org", "ñandú " + secrets.token_hex(4)
    added = stack.compose("run", "--rm", "-T", "admin", "user", "add", user,
                          input_text=password + "\n")
    assert "done" in added.stdout, added.stderr
    subject = "Café para José " + secrets.token_hex(3)
    message = (f"From: bob@example.net\r\nTo: {user}\r\nSubject: {subject}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n¿Qué tal?\r\n").encode()

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="client.test",
                          timeout=30) as client:
            client.starttls(context=tls)
            client.ehlo("client.test")
            client.mail("bob@example.net", ["SMTPUTF8", "BODY=8BITMIME"])
            code, text = client.rcpt(user)
            return (code, text) if code != 250 else client.data(message)

    wait_until("josé accepted by smtp", lambda: send()[0] == 250, 30)
    with imaplib.IMAP4_SSL("127.0.0.1", stack.mail_ports["imaps"], ssl_context=tls,
                           timeout=30) as imap:
        # SASL PLAIN carries the UTF-8 name as bytes (LOGIN's quoted string is ASCII only).
        assert imap.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())[0] == "OK"
        wait_until("josé's message in INBOX", lambda: int(imap.select("INBOX")[1][0]) >= 1, 60)
        imap.literal = subject.encode()
        status, found = imap.search("UTF-8", "SUBJECT")
        assert status == "OK" and found[0].split() == [b"1"], found
        assert imap.store("1", "+FLAGS", "(\\Flagged \\Seen)")[0] == "OK"

        # IDLE (RFC 2177) by hand: imaplib before 3.14 has no idle().
        tag = imap._new_tag().decode()
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline().startswith(b"+")
        assert send()[0] == 250
        deadline = time.monotonic() + 60
        seen = b""
        while b"EXISTS" not in seen and time.monotonic() < deadline:
            seen = imap.readline()
        assert seen.rstrip().endswith(b"EXISTS"), seen
        imap.send(b"DONE\r\n")
        while not (line := imap.readline()).startswith(tag.encode()):
            pass
        assert b" OK" in line, line
    files = stack.compose("exec", "-T", "imap", "find", "/var/lib/buzon/mail/example.org/josé",
                          "-type", "f").stdout.split()
    assert any(re.search(r"/cur/[^/]+:2,FS$", f) for f in files), files


def test_plaintext_login_is_refused_without_tls(mail_stack: Stack) -> None:
    imap = imaplib.IMAP4("127.0.0.1", mail_stack.mail_ports["imap"], timeout=30)
    try:
        assert "LOGINDISABLED" in imap.capabilities, imap.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="(?i)plaintext|disabled|privacy"):
            imap.login(USER, PASSWORD)
    finally:
        imap.shutdown()


def test_health_user_cannot_log_in_from_outside(mail_stack: Stack, tls: ssl.SSLContext) -> None:
    # The healthcheck's user is loopback-only inside the container (allow_nets).
    password = mail_stack.compose("exec", "-T", "imap", "sed", "-n", "2p",
                                  "/run/buzon-health/credentials").stdout.strip()
    assert len(password) >= 32
    with imaplib.IMAP4_SSL("127.0.0.1", mail_stack.mail_ports["imaps"], ssl_context=tls,
                           timeout=30) as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login("buzon-health", password)
