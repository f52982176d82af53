"""TLS as other programs see it: swaks, openssl s_client, /metrics, start-up errors, uvloop.

Most tests here run ``python -m buzon`` as a child process (``server_process``),
so the default event loop (uvloop) carries aiosmtpd's STARTTLS; the in-process
tests of ``test_tls_starttls.py`` run on asyncio's own loop.
"""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, ServerProcess, free_port, server_process, wait_for
from tls_kit import HOST, TestCA, TlsLineClient, client_context, delivered, scrape


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[ServerProcess]:
    """A ``python -m buzon`` with the implicit-TLS listener and /metrics on free ports."""
    env = {"BUZON_TLS_LISTEN": "127.0.0.1", "BUZON_SMTPS_PORT": str(free_port()),
           "BUZON_HTTP_PORT": str(free_port())}
    with server_process(tmp_path / "data", free_port(), env=env) as running:
        yield running


def smtps_port(proc: ServerProcess) -> int:
    return int(proc.env["BUZON_SMTPS_PORT"])


def swaks(*args: str) -> str:
    done = subprocess.run(check=False, args=["swaks", "--server", HOST, "--to", "bob@example.org",
                           "--from", "alice@example.org", "--h-Subject", "swaks tls", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_swaks_tls_verifies_and_queues(proc: ServerProcess) -> None:
    ca = proc.data_dir / "tls" / "ca.pem"
    out = swaks("--port", str(proc.port), "--tls", "--tls-verify", "--tls-ca-path", str(ca))
    assert "<-  250-STARTTLS" in out
    assert " -> STARTTLS\n<-  220 2.0.0 Ready to start TLS" in out
    assert re.search(r"=== TLS started with cipher TLSv1\.[23]:", out), out
    assert '=== TLS peer DN="/CN=mx.test"' in out
    assert "<~  250-STARTTLS" not in out and "AUTH" not in out  # after TLS: neither offered
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as \S+", out), out
    assert wait_for(lambda: delivered(proc.data_dir / "mail"))


def test_swaks_tlsc_on_the_implicit_listener(proc: ServerProcess) -> None:
    ca = proc.data_dir / "tls" / "ca.pem"
    out = swaks("--port", str(smtps_port(proc)), "--tlsc", "--tls-verify", "--tls-ca-path", str(ca))
    # TLS before the greeting: the 220 already arrives through it (~).
    assert out.index("=== TLS started with cipher") < out.index("<~  220 mx.test ESMTP"), out
    assert "STARTTLS" not in out
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as \S+", out), out


def s_client(port: int, *args: str) -> str:
    done = subprocess.run(  # noqa: PLW1510 - the output is checked, not the status
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"{HOST}:{port}", "-msg", *args],
        input="QUIT\n", capture_output=True, text=True, timeout=30,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_gets_tls_1_2_and_1_3(proc: ServerProcess, version: str) -> None:
    ca = proc.data_dir / "tls" / "ca.pem"
    out = s_client(proc.port, version, "-CAfile", str(ca), "-verify_return_error")
    expected = "TLSv1.2" if version == "-tls1_2" else "TLSv1.3"
    assert f"New, {expected}, Cipher is " in out, out
    assert "Verification: OK" in out and "Verify return code: 0 (ok)" in out


@pytest.mark.parametrize("version", ["-tls1_1", "-tls1"])
def test_openssl_s_client_is_refused_below_tls_1_2(proc: ServerProcess, version: str) -> None:
    # SECLEVEL=0 lets OpenSSL 3's client offer the old protocol at all; the
    # ClientHello is sent (the -msg trace shows it), the server never answers it.
    out = s_client(proc.port, version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert re.search(r">>> TLS 1\.[01], Handshake \[length [0-9a-f]+\], ClientHello", out), out
    assert "ServerHello" not in out and "New, TLS" not in out and "Cipher is (NONE)" in out
    assert wait_for(lambda: "unsupported protocol" in proc.log.read_text())


def test_tls_sessions_count_the_handshakes_done(proc: ServerProcess) -> None:
    ca = proc.data_dir / "tls" / "ca.pem"
    http = int(proc.env["BUZON_HTTP_PORT"])
    before = scrape(http)
    assert before["buzon_smtp_tls_sessions_total"] == 0
    context = client_context(ca)
    for _ in range(3):  # STARTTLS
        with smtplib.SMTP(HOST, proc.port, timeout=10) as client:
            client.starttls(context=context)
            client.noop()
    for _ in range(2):  # implicit
        with smtplib.SMTP_SSL(HOST, smtps_port(proc), context=context, timeout=10) as client:
            client.noop()
    with LineClient(proc.port) as c:  # cleartext: not counted
        c.reply()
        c.cmd("NOOP")
    with LineClient(proc.port) as c:  # a failed handshake: not counted
        c.reply()
        c.cmd("STARTTLS")
        c.send(b"\x16\x03\x01\x00\x05hello")
        assert c.closed()
    metrics = wait_for(lambda: (m := scrape(http))["buzon_smtp_connections_open"] == 0 and m)
    assert metrics["buzon_smtp_tls_sessions_total"] == 5
    assert metrics["buzon_smtp_connections_total"] - before["buzon_smtp_connections_total"] == 7


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - the caller checks the status
        [sys.executable, "-m", "buzon", "-d", str(tmp_path / "data"), "-p", "0", "-P", "0"],
        env={"PATH": "/usr/bin:/bin", "BUZON_HTTP_LISTEN": "", **env},
        capture_output=True, text=True, timeout=30,
    )


def test_start_up_names_the_file_that_does_not_load(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    cert_pem, _ = ca.issue(1)
    _, other_key = ca.issue(2)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(other_key)
    done = _start(tmp_path, BUZON_TLS_CERT_FILE=str(cert), BUZON_TLS_KEY_FILE=str(key))
    assert done.returncode == 2
    assert (f"buzon: configuration error: BUZON_TLS_KEY_FILE: {key} is not the key of the "
            f"certificate in {cert}") in done.stderr
    done = _start(tmp_path, BUZON_TLS_CERT_FILE=str(tmp_path / "missing.pem"), BUZON_TLS_KEY_FILE=str(key))
    assert done.returncode == 2
    assert (f"BUZON_TLS_CERT_FILE: cannot read {tmp_path / 'missing.pem'}: No such file or directory"
            in done.stderr)
    done = _start(tmp_path, BUZON_TLS_CERT_FILE=str(cert))
    assert done.returncode == 2
    assert "BUZON_TLS_KEY_FILE: Value error, not set, but BUZON_TLS_CERT_FILE is" in done.stderr


def test_a_half_open_handshake_under_uvloop_is_not_leaked(proc: ServerProcess) -> None:
    http = int(proc.env["BUZON_HTTP_PORT"])
    for _ in range(5):
        with socket.create_connection((HOST, proc.port), timeout=10) as sock:
            sock.recv(100)
            sock.sendall(b"STARTTLS\r\n")
            sock.recv(100)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello, cut
    assert wait_for(lambda: scrape(http)["buzon_smtp_connections_open"] == 0)
    assert scrape(http)["buzon_smtp_tls_sessions_total"] == 0


def test_the_generated_set_is_kept_across_restarts(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    first = make_server()
    folder = first.settings.data_dir / "tls"
    before = {p.name: p.read_bytes() for p in folder.glob("*.pem")}
    assert sorted(before) == ["ca.pem", "cert.pem", "key.pem"]
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    first.stop()
    second = make_server()
    assert {p.name: p.read_bytes() for p in folder.glob("*.pem")} == before
    with TlsLineClient(second.port) as c:
        c.reply()
        c.starttls(client_context(folder / "ca.pem"))
