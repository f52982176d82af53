"""STARTTLS (RFC 3207) with real clients: smtplib, raw sockets, swaks and openssl s_client.

Each test runs a real Buzón in-process (``make_server``), which generates its
local CA into ``<data_dir>/tls/`` at start unless the test gives it certificate
files. Clients verify the server against that ``ca.pem`` (or the test's own CA)
and its name, as a careful client would.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, code, wait_for
from tls_kit import (
    HOST,
    TestCA,
    TlsLineClient,
    client_context,
    delivered,
    in_loop,
    replace,
    sessions,
)

from buzon.smtp import replies

MESSAGE = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: tls\r\n\r\nover TLS\r\n"


def ca_of(server: RunningServer) -> Path:
    return server.settings.data_dir / "tls" / "ca.pem"


def counted(server: RunningServer) -> tuple[int, int, int]:
    """(tls_sessions, concurrent_connections, open sessions), read on the server's loop."""
    counters, hub = server.server.counters, server.server.hub
    return in_loop(server, lambda: (
        counters.tls_sessions, counters.concurrent_connections, len(hub.sessions)))


def test_smtplib_starttls_verifies_the_generated_ca_and_delivers(server: RunningServer) -> None:
    with smtplib.SMTP(HOST, server.port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("starttls")
        assert client.starttls(context=client_context(ca_of(server)))[0] == 220
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        client.ehlo("client.example")
        # RFC 3207 §4.2: not offered again; and no AUTH, which this server does not have.
        assert not client.has_extn("starttls") and not client.has_extn("auth")
        refused = client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE)
        assert refused == {}
        version, cipher = client.sock.version(), client.sock.cipher()[0]  # type: ignore[union-attr]
    server.wait_idle()
    files = wait_for(lambda: delivered(server.mail_root))
    assert len(files) == 1 and b"over TLS" in files[0].read_bytes()
    # The trace header (smtp/trace.py) reads the session's SSL object: ESMTPS, version, cipher.
    head = files[0].read_bytes().split(b"\r\n\r\n", 1)[0].decode()
    assert "with ESMTPS id " in head and f"version={version} cipher={cipher}" in head, head
    assert wait_for(lambda: counted(server) == (1, 0, 0)), counted(server)


def test_a_configured_rsa_certificate_is_served_and_verified(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    # A self-signed RSA 2048 certificate made by openssl req, as an operator would.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    server = make_server(tls_cert_file=cert, tls_key_file=key)
    assert not (server.settings.data_dir / "tls").exists()  # nothing generated
    with smtplib.SMTP(HOST, server.port, timeout=10) as client:
        client.starttls(context=client_context(cert))
        peer = client.sock.getpeercert()  # type: ignore[union-attr]
        assert dict(x[0] for x in peer["subject"]) == {"commonName": "localhost"}
        assert client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE) == {}
    # The generated CA does not vouch for it, and a wrong CA is refused by the client.
    other = make_server()
    with smtplib.SMTP(HOST, other.port, timeout=10) as client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=client_context(cert))


def test_the_session_sees_the_ssl_object_the_trace_header_reads(server: RunningServer) -> None:
    with TlsLineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        (plain,) = sessions(server)
        assert in_loop(server, lambda: plain.transport.get_extra_info("ssl_object")) is None
        sock = c.starttls(client_context(ca_of(server)))
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        (session,) = sessions(server)
        assert session is plain  # the same session object, upgraded
        version, cipher, bits, active = in_loop(server, lambda: (
            session.transport.get_extra_info("ssl_object").version(),
            session.transport.get_extra_info("ssl_object").cipher()[0],
            session.transport.get_extra_info("ssl_object").cipher()[2],
            session.tls_active,
        ))
        assert (version, cipher, bits, active) == (sock.version(), sock.cipher()[0], sock.cipher()[2], True)
        assert in_loop(server, lambda: session.transport.get_extra_info("peername"))[0] == HOST


def test_starttls_forgets_the_envelope_and_cleartext_pipelined_after_it(server: RunningServer) -> None:
    with TlsLineClient(server.port) as c:
        c.reply()
        assert c.cmd("EHLO client.example").startswith("250-")
        assert c.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"
        # A man in the middle's command injected after STARTTLS (CVE-2011-0411 style)
        # arrives in cleartext with it: it must be dropped, not run under TLS.
        c.send("STARTTLS\r\nMAIL FROM:<mallory@example.org>\r\n")
        assert c.reply() == "220 2.0.0 Ready to start TLS"
        c.wrap(client_context(ca_of(server)))
        # RFC 3207 §4.2: the envelope (and the EHLO) are gone; the injected MAIL never ran.
        assert c.cmd("RCPT TO:<bob@example.org>") == str(replies.NEED_MAIL)
        assert c.cmd("STARTTLS") == str(replies.TLS_ACTIVE)
        assert c.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"
        assert c.cmd("QUIT") == "221 2.0.0 Bye"
    assert wait_for(lambda: counted(server) == (1, 0, 0)), counted(server)


def test_starttls_with_an_argument_is_a_syntax_error(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        assert code(c.cmd("STARTTLS now")) == "501 5.5.4"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"  # still cleartext, still serving


@pytest.mark.parametrize("garbage", [
    b"this is not a TLS record\r\n",
    b"\x16\x03\x01\x00\x05hello",  # a handshake record header, then nonsense
    b"",  # EOF in the handshake
])
def test_a_failed_handshake_ends_only_that_session(
    server: RunningServer, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buzon.smtp.tls")
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        assert wait_for(lambda: counted(server)[2] == 1)
        if garbage:
            c.send(garbage)
        else:
            c.sock.shutdown(2 - 1)  # SHUT_WR: EOF, the socket still reads
        assert c.closed(10)
    assert wait_for(lambda: counted(server) == (0, 0, 0)), counted(server)
    assert "TLS handshake with 127.0.0.1:" in caplog.text
    assert "SMTP session error" not in caplog.text  # no traceback from the handler
    # The server goes on serving, in TLS too.
    with smtplib.SMTP(HOST, server.port, timeout=10) as client:
        client.starttls(context=client_context(ca_of(server)))
        assert client.noop()[0] == 250
    assert wait_for(lambda: counted(server) == (1, 0, 0)), counted(server)


def test_a_client_silent_in_the_handshake_is_timed_out(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(idle_timeout=0.5)
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        assert c.closed(10)  # no ClientHello ever: the idle timer ends it
    assert wait_for(lambda: counted(server) == (0, 0, 0)), counted(server)


def test_require_tls_refuses_mail_before_starttls(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(require_tls=True)
    with TlsLineClient(server.port) as c:
        c.reply()
        assert "250-STARTTLS" in c.cmd("EHLO client.example")
        assert c.cmd("MAIL FROM:<alice@example.org>") == "530 5.7.0 Must issue a STARTTLS command first"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"  # RFC 3207 §4: NOOP, EHLO, STARTTLS, QUIT allowed
        c.starttls(client_context(ca_of(server)))
        assert c.cmd("EHLO client.example").startswith("250-")
        assert c.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"


def test_tls_off_offers_no_starttls(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(tls=False)
    assert not (server.settings.data_dir / "tls").exists()
    with LineClient(server.port) as c:
        c.reply()
        assert "STARTTLS" not in c.cmd("EHLO client.example")
        assert code(c.cmd("STARTTLS")) == "454 4.7.0"


def test_a_renewed_certificate_is_served_to_new_sessions_only(
    make_server: Callable[..., RunningServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path / "ca")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first_cert, first_key = ca.issue(1001)
    cert.write_bytes(first_cert)
    key.write_bytes(first_key)
    server = make_server(tls_cert_file=cert, tls_key_file=key, tls_reload_interval=0.1)
    context = client_context(ca.cafile)

    def serial_now() -> int:
        with TlsLineClient(server.port) as probe:
            probe.reply()
            probe.starttls(context)
            return probe.serial

    with TlsLineClient(server.port) as before:
        before.reply()
        before.starttls(context)
        assert before.serial == 1001
        # Renewal: key then certificate, each renamed into place.
        new_cert, new_key = ca.issue(2002, rsa_key=True)
        replace(key, new_key)
        replace(cert, new_cert)
        assert wait_for(lambda: serial_now() == 2002, timeout=10)
        # The session opened before goes on with its own TLS session and delivers.
        assert before.cmd("EHLO client.example").startswith("250-")
        assert before.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"
        assert before.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 Ok"
        assert before.cmd("DATA").startswith("354")
        assert before.cmd(MESSAGE + ".").startswith("250 2.0.0 Ok: queued as ")
        assert before.serial == 1001

    # A bad replacement: a key that is not the certificate's. The old pair stays.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="buzon.tls"):
        _, stray_key = ca.issue(3003)
        replace(key, stray_key)
        # The files are looked at when a client starts TLS: keep connecting.
        assert wait_for(lambda: serial_now() and "not reloaded" in caplog.text, timeout=10)
        assert serial_now() == 2002
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text  # once per change, not once per connection
    assert f"BUZON_TLS_KEY_FILE: {key} is not the key of the certificate in {cert}" in errors[0].getMessage()
    # Fixed: the good pair loads again.
    good_cert, good_key = ca.issue(4004)
    replace(key, good_key)
    replace(cert, good_cert)
    assert wait_for(lambda: serial_now() == 4004, timeout=10)


def test_the_upgrade_keeps_the_client_share_and_the_idle_timer(
    make_server: Callable[..., RunningServer]
) -> None:
    server = make_server(max_connections_per_client=1, client_limit_exempt="", idle_timeout=1.0)
    context = client_context(ca_of(server))
    with TlsLineClient(server.port) as first:
        first.reply()
        first.starttls(context)
        assert first.cmd("EHLO client.example").startswith("250-")
        # Still one session of this client after the second connection_made: the next is refused.
        with LineClient(server.port) as second:
            assert code(second.reply()) == "421 4.7.0"
        assert counted(server) == (1, 1, 1)
        # The idle timer runs on under TLS: silence ends the session with 421 4.4.2, in TLS.
        assert first.reply() == replies.TIMEOUT.format("mx.test")
        assert first.closed()
    assert wait_for(lambda: counted(server) == (1, 0, 0)), counted(server)
    with TlsLineClient(server.port) as third:  # the client's share was given back
        assert third.reply() == "220 mx.test ESMTP"
