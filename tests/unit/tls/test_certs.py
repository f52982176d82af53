"""The generated CA and server certificate: names, constraints, files, renewal. No sockets.

Handshakes here run between two ``ssl.SSLObject`` over memory BIOs
(``tls_kit.handshake``), so what a real client's verification says is checked
without a network.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tls_kit import handshake

from buzon.tls import ensure_generated, generate, load_pair, needs_renewal
from buzon.tls.certs import RENEW_BEFORE, VALIDITY

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


def files(tmp_path: Path, hostname: str = "mx.example.org") -> tuple[Path, Path, Path]:
    ca, cert, key = generate(hostname, datetime.datetime.now(datetime.UTC))
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    for path, data in zip(paths, (ca, cert, key), strict=True):
        path.write_bytes(data)
    return paths


@pytest.mark.parametrize("name", ["mx.example.org", "localhost", "127.0.0.1", "::1"])
def test_a_client_trusting_ca_pem_verifies_every_name(tmp_path: Path, name: str) -> None:
    ca, cert, key = files(tmp_path)
    client = ssl.create_default_context(cafile=str(ca))
    obj = handshake(load_pair(cert, key).context, client, name)
    assert obj.version() in ("TLSv1.2", "TLSv1.3")


def test_another_name_is_refused_by_the_client(tmp_path: Path) -> None:
    ca, cert, key = files(tmp_path)
    client = ssl.create_default_context(cafile=str(ca))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(load_pair(cert, key).context, client, "other.example.org")


def test_strict_verification_accepts_the_chain(tmp_path: Path) -> None:
    # Python 3.13's default context sets VERIFY_X509_STRICT: AKI, SKI, critical
    # basic constraints. The chain must pass that too.
    ca, cert, key = files(tmp_path)
    client = ssl.create_default_context(cafile=str(ca))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    handshake(load_pair(cert, key).context, client, "mx.example.org")


def test_the_ca_is_constrained_to_the_servers_names_and_its_key_is_dropped() -> None:
    ca_pem, cert_pem, key_pem = generate("mx.example.org", NOW)
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [
        x509.DNSName("mx.example.org"), x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    ]
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.not_valid_after_utc - NOW == VALIDITY
    cert.verify_directly_issued_by(ca)
    # Only one private key leaves generate(): the server's.
    assert key_pem.count(b"PRIVATE KEY-----") == 2 and b"PRIVATE" not in ca_pem + cert_pem


def test_an_ip_literal_hostname_becomes_an_ip_san() -> None:
    _, cert_pem, _ = generate("192.0.2.25", NOW)
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert x509.IPAddress(ipaddress.ip_address("192.0.2.25")) in san
    assert needs_renewal(cert_pem, "192.0.2.25", NOW) is None


def test_needs_renewal_says_why() -> None:
    _, cert_pem, _ = generate("mx.example.org", NOW)
    assert needs_renewal(cert_pem, "mx.example.org", NOW) is None
    assert needs_renewal(cert_pem, "MX.example.org", NOW) is None
    assert needs_renewal(cert_pem, "mx2.example.org", NOW) == "it does not name mx2.example.org"
    late = NOW + VALIDITY - RENEW_BEFORE + datetime.timedelta(seconds=1)
    assert needs_renewal(cert_pem, "mx.example.org", late) == (
        f"it expires on {(NOW + VALIDITY):%Y-%m-%d}")
    assert needs_renewal(b"garbage", "mx.example.org", NOW) == "it cannot be read"


def test_ensure_generated_writes_once_with_private_key_modes(tmp_path: Path) -> None:
    made = ensure_generated(tmp_path / "tls", "mx.example.org", NOW)
    assert made.key.stat().st_mode & 0o777 == 0o600
    assert made.cert.stat().st_mode & 0o777 == 0o644 and made.ca.stat().st_mode & 0o777 == 0o644
    first = made.cert.read_bytes()
    assert ensure_generated(tmp_path / "tls", "mx.example.org", NOW).cert.read_bytes() == first
    assert not list((tmp_path / "tls").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["mismatched key", "hostname changed", "expiring", "ca missing"])
def test_ensure_generated_makes_a_new_set_when_the_old_is_unusable(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "tls"
    made = ensure_generated(folder, "mx.example.org", NOW)
    old = made.cert.read_bytes()
    hostname, now = "mx.example.org", NOW
    if damage == "mismatched key":
        made.key.write_bytes(generate("mx.example.org", NOW)[2])
    elif damage == "hostname changed":
        hostname = "mail.example.org"
    elif damage == "expiring":
        now = NOW + VALIDITY - datetime.timedelta(days=1)
    else:
        made.ca.unlink()
    with caplog.at_level(logging.WARNING, logger="buzon.tls"):
        ensure_generated(folder, hostname, now)
    assert made.cert.read_bytes() != old
    assert "making a new TLS certificate set" in caplog.text
    load_pair(made.cert, made.key)  # a matching pair again


def test_concurrent_starts_generate_one_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "tls"
    results: list[bytes] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        results.append(ensure_generated(folder, "mx.example.org").cert.read_bytes())

    with caplog.at_level(logging.INFO, logger="buzon.tls"):
        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert caplog.text.count("generated a TLS certificate") == 1
