"""The server context: each bad file named, TLS 1.2 floor, reload on change with the clock injected."""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tls_kit import handshake

from buzon.tls import ServerTls, TlsError, generate, load_pair

NOW = datetime.datetime.now(datetime.UTC)


def pair(tmp_path: Path, name: str = "mx.example.org") -> tuple[Path, Path, Path]:
    ca, cert, key = generate(name, NOW)
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    for path, data in zip(paths, (ca, cert, key), strict=True):
        path.write_bytes(data)
    return paths


def test_the_context_has_the_tls_1_2_floor_and_no_compression(tmp_path: Path) -> None:
    _, cert, key = pair(tmp_path)
    context = load_pair(cert, key).context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    # TLS 1.2 suites: forward-secret, no SHA-1 MAC, no RC4/3DES (Python's defaults).
    names = [c["name"] for c in context.get_ciphers()]
    for cipher in context.get_ciphers():
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] in ("kx-ecdhe", "kx-dhe"), cipher["name"]
            assert cipher["aead"] or cipher["digest"] in ("sha256", "sha384"), cipher["name"]
            assert "RC4" not in cipher["name"] and "DES" not in cipher["name"]
    assert names[0].startswith("TLS_AES_256_GCM")  # TLS 1.3 first


def test_a_tls_1_1_client_is_refused(tmp_path: Path) -> None:
    ca, cert, key = pair(tmp_path)
    client = ssl.create_default_context(cafile=str(ca))
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(load_pair(cert, key).context, client, "mx.example.org")


def test_each_bad_file_is_named(tmp_path: Path) -> None:
    _, cert, key = pair(tmp_path)
    missing = tmp_path / "nope.pem"
    with pytest.raises(TlsError, match=f"^BUZON_TLS_CERT_FILE: cannot read {missing}: No such file"):
        load_pair(missing, key)
    with pytest.raises(TlsError, match=f"^BUZON_TLS_KEY_FILE: cannot read {missing}: No such file"):
        load_pair(cert, missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem\n")
    with pytest.raises(TlsError, match=f"^BUZON_TLS_CERT_FILE: {garbage} holds no PEM certificate$"):
        load_pair(garbage, key)
    with pytest.raises(TlsError, match=f"^BUZON_TLS_KEY_FILE: {garbage} holds no PEM private key$"):
        load_pair(cert, garbage)
    (tmp_path / "other").mkdir()
    _, _, other = pair(tmp_path / "other")
    with pytest.raises(TlsError, match=f"^BUZON_TLS_KEY_FILE: {other} is not the key of the certificate in {cert}$"):
        load_pair(cert, other)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TlsError, match=f"^BUZON_TLS_KEY_FILE: {locked} is encrypted"):
        load_pair(cert, locked)


def test_an_unreadable_key_is_named(tmp_path: Path) -> None:
    # A directory where the file should be: unreadable even for root (which
    # ignores mode bits, so chmod 0 would prove nothing here).
    _, cert, _ = pair(tmp_path)
    folder = tmp_path / "key.d"
    folder.mkdir()
    with pytest.raises(TlsError, match=f"^BUZON_TLS_KEY_FILE: cannot read {folder}: Is a directory$"):
        load_pair(cert, folder)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def renew(tmp_path: Path, cert: Path, key: Path) -> int:
    """Write a new pair over ``cert``/``key`` (renamed into place); its serial."""
    fresh = tmp_path / "fresh"
    fresh.mkdir(exist_ok=True)
    _, new_cert, new_key = pair(fresh)
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    return load_pair(cert, key).serial


def test_a_renewed_pair_is_loaded_at_most_once_per_interval(tmp_path: Path) -> None:
    _, cert, key = pair(tmp_path)
    clock = Clock()
    tls = ServerTls(cert, key, interval=5.0, clock=clock)
    old_context, old_serial = tls.current(), tls.loaded.serial
    serial = renew(tmp_path, cert, key)
    assert serial != old_serial
    clock.now += 4.9
    assert tls.current() is old_context  # not looked at yet
    clock.now += 0.1
    new_context = tls.current()
    assert new_context is not old_context and tls.loaded.serial == serial and tls.reloads == 1
    clock.now += 10
    assert tls.current() is new_context  # unchanged files: no reload
    assert tls.reloads == 1


def test_a_bad_new_pair_keeps_the_old_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, cert, key = pair(tmp_path)
    clock = Clock()
    tls = ServerTls(cert, key, interval=1.0, clock=clock)
    old = tls.current()
    key.write_bytes(generate("mx.example.org", NOW)[2])  # a key of another certificate
    with caplog.at_level(logging.ERROR, logger="buzon.tls"):
        for _ in range(5):
            clock.now += 1
            assert tls.current() is old
    assert tls.failures == 1 and len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith(f"TLS certificate not reloaded: BUZON_TLS_KEY_FILE: {key} is not the key")
    assert f"keep the certificate loaded before (serial {tls.loaded.serial:x}" in message
    # The file vanishes mid-renewal, then the matching certificate lands: loaded.
    serial = renew(tmp_path, cert, key)
    clock.now += 1
    assert tls.current() is not old and tls.loaded.serial == serial


def test_sessions_already_in_tls_keep_their_certificate(tmp_path: Path) -> None:
    ca, cert, key = pair(tmp_path)
    clock = Clock()
    tls = ServerTls(cert, key, interval=1.0, clock=clock)
    client = ssl.create_default_context(cafile=str(ca))
    before = handshake(tls.current(), client, "mx.example.org")
    first = before.getpeercert(binary_form=True)
    renew(tmp_path, cert, key)
    ca.write_bytes((tmp_path / "fresh" / "ca.pem").read_bytes())
    clock.now += 1
    client = ssl.create_default_context(cafile=str(ca))
    after = handshake(tls.current(), client, "mx.example.org")
    assert after.getpeercert(binary_form=True) != first
    assert before.getpeercert(binary_form=True) == first  # the old session's is unchanged
