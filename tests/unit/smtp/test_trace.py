"""The Received: trace field (RFC 5321 §4.4): one table of sessions and the exact bytes."""

from __future__ import annotations

import calendar
import email
import email.policy
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from buzon.smtp.trace import (
    TlsFacts,
    address_literal,
    clean_name,
    peer_ip,
    protocol,
    received_header,
    rfc5322_date,
    tls_facts,
)

WHEN = calendar.timegm((2026, 11, 29, 14, 49, 33))  # a Sunday
DATE = "Sun, 29 Nov 2026 14:49:33 +0000"
TLS13 = TlsFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
QID = "AGA2BXHGAEKN6XQA"

BASE: dict[str, Any] = {
    "helo": "client.example", "client_name": "localhost", "ip": "127.0.0.1", "host": "mx.test",
    "queue_id": QID, "esmtp": True, "tls": None, "utf8": False,
    "recipients": ["bob@example.org"], "when": WHEN,
}

CASES: list[tuple[str, dict[str, Any], bytes]] = [
    ("IPv4, one recipient", {}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("IPv6 literal, unconfirmed name", {"ip": "2001:db8::1", "client_name": "unknown"}, (
        b"Received: from client.example (unknown [IPv6:2001:db8::1])\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("TLS", {"tls": TLS13}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with ESMTPS id AGA2BXHGAEKN6XQA\r\n"
        b"\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256)\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("TLS, two recipients", {"tls": TLS13, "recipients": ["a@x.org", "b@x.org"]}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with ESMTPS id AGA2BXHGAEKN6XQA\r\n"
        b"\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256);\r\n"
        b"\tSun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("two recipients: no for clause", {"recipients": ["a@x.org", "b@x.org"]}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA;\r\n"
        b"\tSun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("HELO, not EHLO", {"esmtp": False}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with SMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("SMTPUTF8 with a UTF-8 recipient", {"utf8": True, "recipients": ["josé@example.org"]}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with UTF8SMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <jos\xc3\xa9@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("SMTPUTF8 under TLS", {"utf8": True, "tls": TLS13}, (
        b"Received: from client.example (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with UTF8SMTPS id AGA2BXHGAEKN6XQA\r\n"
        b"\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256)\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("no HELO: the client's name stands in, as in Postfix", {"helo": None}, (
        b"Received: from localhost (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("HELO with spaces, parentheses and 8-bit: dropped",
     {"helo": "evil (fake [1.2.3.4]) é\\x", "client_name": "unknown"}, (
         b"Received: from evilfake[1.2.3.4]x (unknown [127.0.0.1])\r\n"
         b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
         b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("HELO of nothing but junk: the client's name", {"helo": " ( ) "}, (
        b"Received: from localhost (localhost [127.0.0.1])\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("an address literal as HELO", {"helo": "[192.0.2.7]", "ip": "192.0.2.7",
                                    "client_name": "unknown"}, (
        b"Received: from [192.0.2.7] (unknown [192.0.2.7])\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
    ("no peer address (not a TCP socket)", {"ip": None}, (
        b"Received: from client.example (localhost unknown)\r\n"
        b"\tby mx.test (Buzon) with ESMTP id AGA2BXHGAEKN6XQA\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 14:49:33 +0000\r\n")),
]


@pytest.mark.parametrize(("why", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_received_header_table(why: str, changes: dict[str, Any], expected: bytes) -> None:
    assert received_header(**{**BASE, **changes}) == expected


@pytest.mark.parametrize(("why", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_received_header_parses_as_one_field(
    why: str, changes: dict[str, Any], expected: bytes,
) -> None:
    message = email.message_from_bytes(expected + b"\r\nbody\r\n", policy=email.policy.default)
    assert len(message.get_all("Received")) == 1
    value = str(message["Received"])
    assert value.startswith("from ") and value.endswith(DATE)
    assert message.get_content().strip() == "body"


@pytest.mark.parametrize(
    ("peername", "ip"),
    [
        (("127.0.0.1", 54054), "127.0.0.1"),
        (("::1", 45782, 0, 0), "::1"),
        (("2001:db8::1", 25, 0, 0), "2001:db8::1"),
        (("fe80::1%eth0", 25, 0, 2), "fe80::1"),
        (("::ffff:192.0.2.1", 25, 0, 0), "192.0.2.1"),
        (("not an address", 25), None),
        ("", None),
        (None, None),
    ],
)
def test_peer_ip_drops_port_scope_and_mapping(peername: Any, ip: str | None) -> None:
    assert peer_ip(peername) == ip


@pytest.mark.parametrize(
    ("ip", "literal"),
    [("192.0.2.1", "[192.0.2.1]"), ("2001:db8::1", "[IPv6:2001:db8::1]"),
     ("::1", "[IPv6:::1]"), (None, "unknown")],
)
def test_address_literal_rfc5321_4_1_3(ip: str | None, literal: str) -> None:
    assert address_literal(ip) == literal


@pytest.mark.parametrize(
    ("esmtp", "tls", "utf8", "word"),
    [
        (False, False, False, "SMTP"), (True, False, False, "ESMTP"),
        (True, True, False, "ESMTPS"), (True, False, True, "UTF8SMTP"),
        (True, True, True, "UTF8SMTPS"), (False, True, False, "SMTP"),
    ],
)
def test_with_protocol_rfc3848_rfc6531(esmtp: bool, tls: bool, utf8: bool, word: str) -> None:
    assert protocol(esmtp=esmtp, tls=tls, utf8=utf8) == word


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (WHEN, DATE),
        (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
        (calendar.timegm((2024, 2, 29, 23, 59, 59)), "Thu, 29 Feb 2024 23:59:59 +0000"),
        (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 +0000"),
    ],
)
def test_rfc5322_date(when: float, text: str) -> None:
    assert rfc5322_date(when) == text
    assert email.utils.parsedate_to_datetime(text).timestamp() == int(when)


def test_rfc5322_date_ignores_the_locale() -> None:
    # %a and %b of strftime follow LC_TIME; the table does not.
    import locale

    saved = locale.setlocale(locale.LC_TIME)
    try:
        try:
            locale.setlocale(locale.LC_TIME, "C.UTF-8")
        except locale.Error:
            pytest.skip("no C.UTF-8 locale")
        assert rfc5322_date(WHEN) == DATE
    finally:
        locale.setlocale(locale.LC_TIME, saved)


@pytest.mark.parametrize(
    ("text", "clean"),
    [("mx.example.org", "mx.example.org"), ("a b\tc", "abc"), ("x\r\nReceived: y", "xReceived:y"),
     ("(c)", "c"), ("é", ""), (None, ""), ("x" * 300, "x" * 255)],
)
def test_clean_name(text: str | None, clean: str) -> None:
    assert clean_name(text) == clean


def test_tls_facts_of_a_real_handshake(tmp_path: Path) -> None:
    """``tls_facts`` reads a real ``SSLObject`` after a TLS 1.3 handshake in memory."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=mx.test"],
        check=True, capture_output=True, timeout=30,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="mx.test")
    assert tls_facts(server) is None  # before the handshake: no cipher yet
    for _ in range(10):
        for side, outgoing, incoming in ((client, bios[3], bios[0]), (server, bios[1], bios[2])):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            incoming.write(outgoing.read())
    facts = tls_facts(server)
    assert facts is not None and facts.version == server.version()
    assert facts.cipher == server.cipher()[0] and facts.bits == server.cipher()[2] > 0
    header = received_header(**{**BASE, "tls": facts})
    assert f"(version={facts.version} cipher={facts.cipher} bits={facts.bits})".encode() in header
    assert b"with ESMTPS id" in header
    assert tls_facts(None) is None
