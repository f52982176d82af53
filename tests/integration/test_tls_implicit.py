"""Implicit TLS (RFC 8314): a listener in TLS from the first byte, in one process and under workers."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RunningServer, free_port, server_process, wait_for
from tls_kit import HOST, TlsLineClient, client_context, delivered, in_loop, sessions

from buzon.smtp import replies

MESSAGE = "From: alice@example.org\r\nSubject: smtps\r\n\r\nimplicit\r\n"


@pytest.fixture
def smtps(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(tls_listen="127.0.0.1,::1", smtps_port=0)


def test_the_listener_binds_every_address_on_one_port(smtps: RunningServer) -> None:
    addresses = smtps.server.smtps_addresses
    assert {a[0] for a in addresses} == {"127.0.0.1", "::1"}
    assert len({a[1] for a in addresses}) == 1 and addresses[0][1] != smtps.port


def test_smtp_ssl_verifies_and_delivers_with_no_starttls_offered(smtps: RunningServer) -> None:
    port = smtps.server.smtps_addresses[0][1]
    context = client_context(smtps.settings.data_dir / "tls" / "ca.pem")
    with smtplib.SMTP_SSL(HOST, port, context=context, timeout=10) as client:
        client.ehlo("client.example")
        assert not client.has_extn("starttls") and not client.has_extn("auth")
        assert client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE) == {}
        version, cipher = client.sock.version(), client.sock.cipher()[0]  # type: ignore[union-attr]
    smtps.wait_idle()
    (file,) = wait_for(lambda: delivered(smtps.mail_root))
    head = file.read_bytes().split(b"\r\n\r\n", 1)[0].decode()
    assert "with ESMTPS id " in head and f"version={version} cipher={cipher}" in head, head
    counters = smtps.server.counters
    assert wait_for(lambda: in_loop(smtps, lambda: counters.tls_sessions) == 1)


def test_the_session_is_in_tls_from_the_start(smtps: RunningServer) -> None:
    port = smtps.server.smtps_addresses[0][1]
    context = client_context(smtps.settings.data_dir / "tls" / "ca.pem")
    with TlsLineClient(port, implicit=context) as c:
        assert c.reply() == "220 mx.test ESMTP"
        assert c.cmd("STARTTLS") == str(replies.TLS_ACTIVE)
        (session,) = sessions(smtps)
        version, cipher = in_loop(smtps, lambda: (
            session.transport.get_extra_info("ssl_object").version(),
            session.transport.get_extra_info("ssl_object").cipher()[0]))
        assert (version, cipher) == (c.sock.version(), c.sock.cipher()[0])  # type: ignore[attr-defined]
    assert wait_for(lambda: not sessions(smtps))


def test_require_tls_is_met_by_implicit_tls(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(tls_listen="127.0.0.1", smtps_port=0, require_tls=True)
    context = client_context(server.settings.data_dir / "tls" / "ca.pem")
    with TlsLineClient(server.server.smtps_addresses[0][1], implicit=context) as c:
        c.reply()
        assert c.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"


def test_a_plaintext_client_on_the_tls_port_is_dropped(smtps: RunningServer) -> None:
    port = smtps.server.smtps_addresses[0][1]
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"EHLO plain.example\r\n")
        sock.settimeout(10)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"220")  # never greeted in cleartext
    counters = smtps.server.counters
    assert in_loop(smtps, lambda: (counters.tls_sessions, counters.concurrent_connections)) == (0, 0)


def test_workers_serve_both_ports_with_one_generated_certificate(tmp_path: Path) -> None:
    port, smtps_port = free_port(), free_port()
    env = {"BUZON_WORKERS": "3", "BUZON_TLS_LISTEN": "127.0.0.1", "BUZON_SMTPS_PORT": str(smtps_port)}
    with server_process(tmp_path / "data", port, env=env) as proc:
        context = client_context(tmp_path / "data" / "tls" / "ca.pem")
        serials = set()
        for _ in range(12):  # SO_REUSEPORT spreads these over the workers
            with TlsLineClient(smtps_port, implicit=context) as c:
                assert c.reply() == "220 mx.test ESMTP"
                serials.add(c.serial)
            with TlsLineClient(port) as c:
                c.reply()
                c.starttls(context)
                serials.add(c.serial)
        assert len(serials) == 1
        assert proc.log.read_text().count("generated a TLS certificate") == 1
        assert proc.terminate() == 0
