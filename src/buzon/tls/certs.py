"""The generated certificates: a small local CA and a server certificate signed by it.

Theory of operation
-------------------
With ``BUZON_TLS`` on and no certificate files configured, the server makes its
own at first start, into ``<data_dir>/tls/``:

* ``ca.pem``: a CA certificate for this one server. Clients trust it (smtplib's
  ``cafile=``, Postfix's ``smtp_tls_CAfile``, swaks ``--tls-ca-path``) and then
  verify the server's name as they would with a public CA.
* ``cert.pem`` / ``key.pem`` (0600): the server certificate for
  ``BUZON_HOSTNAME``, ``localhost``, ``127.0.0.1`` and ``::1``, and its key.

Choices, and why:

* **The CA's key is discarded once it has signed.** A CA key on the mail
  server's disk would be a standing credential: whoever read it could mint
  certificates that every client trusting ``ca.pem`` accepts. Nothing needs it
  later: renewal makes a whole new set (a new ``ca.pem`` to trust), which is
  what a development or small-site certificate wants; a real deployment points
  ``BUZON_TLS_CERT_FILE``/``BUZON_TLS_KEY_FILE`` at certificates from its own CA
  or ACME. The CA also carries name constraints (RFC 5280 §4.2.1.10) limited to
  the names above, so even its certificate cannot vouch for anyone else.
* **EC P-256 keys, ECDSA-SHA256.** Handshakes sign with the server key; ECDSA
  P-256 signs about ten times faster than RSA 2048 and every TLS 1.2+ client
  (Postfix, OpenSSL, Python, swaks, Outlook, Thunderbird) accepts it.
* **825 days**, the longest validity Apple's clients accept for a TLS server
  certificate. A set that has expired, expires within 30 days or no longer
  names ``BUZON_HOSTNAME`` is made again at start (logged: clients must trust
  the new ``ca.pem``).
* The extensions OpenSSL's strict verification (Python 3.13's default context)
  expects: basic constraints and key usage critical on the CA, subject and
  authority key identifiers, extended key usage ``serverAuth``.

Generation is serialised by a lock file, and each file is written to a temporary
name and renamed, so two processes starting at once (or a crash half-way) never
leave a key that does not match its certificate in place. The supervisor of
``BUZON_WORKERS`` generates before it starts any worker; the workers only load.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from buzon.fsutil import fsync_dir, unlink_quietly, write_all

__all__ = ["GeneratedFiles", "ensure_generated", "generate", "needs_renewal"]

log = logging.getLogger("buzon.tls")

VALIDITY = datetime.timedelta(days=825)
RENEW_BEFORE = datetime.timedelta(days=30)
_EXTRA_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class GeneratedFiles:
    """Where the generated set lives, inside one directory."""

    folder: Path
    """``<data_dir>/tls``."""

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _names(hostname: str) -> list[str]:
    return list(dict.fromkeys([hostname.lower(), *_EXTRA_NAMES]))


def _constraint(name: str) -> x509.GeneralName:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return x509.DNSName(name)
    return x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}"))


def generate(hostname: str, now: datetime.datetime) -> tuple[bytes, bytes, bytes]:
    """A fresh CA and server certificate for ``hostname``; pure apart from randomness.

    Args:
        hostname: the server's name (``BUZON_HOSTNAME``); a DNS name or an IP literal.
        now: the start of validity (aware, UTC).

    Returns:
        ``(ca_pem, cert_pem, key_pem)``; the CA's key is not returned: it is dropped.
    """
    names = _names(hostname)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Buzón"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"Buzón local CA for {hostname}"[:64]),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks a little behind
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=[_constraint(n) for n in names],
                                 excluded_subtrees=None),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    del ca_key  # never written anywhere: see the module docstring
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key_pem,
    )


def needs_renewal(cert_pem: bytes, hostname: str, now: datetime.datetime) -> str | None:
    """Why a generated certificate must be made again, or None when it is still good."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "it cannot be read"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it names no host"
    if _general_name(hostname.lower()) not in san:
        return f"it does not name {hostname}"
    return None


def _pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        return False
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def ensure_generated(
    folder: Path, hostname: str, now: datetime.datetime | None = None
) -> GeneratedFiles:
    """Make the generated set in ``folder`` unless a good one is there; its paths.

    Raises:
        OSError: the folder or a file cannot be written.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    files = GeneratedFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        try:
            reason = needs_renewal(files.cert.read_bytes(), hostname, now)
            if reason is None and not files.ca.exists():
                reason = "ca.pem is missing"
            if reason is None and not _pair_matches(files.cert.read_bytes(), files.key.read_bytes()):
                reason = "key.pem does not match cert.pem"
        except FileNotFoundError:
            reason = ""
        if reason is None:
            return files
        if reason:
            log.warning(
                "making a new TLS certificate set in %s: the old one is unusable (%s); "
                "clients that trusted the old ca.pem must trust the new one", folder, reason,
            )
        ca_pem, cert_pem, key_pem = generate(hostname, now)
        # A crash between these renames leaves a key that does not match its
        # certificate; the next start sees that (above) and makes the set again.
        _write(files.key, key_pem, 0o600)
        _write(files.cert, cert_pem, 0o644)
        _write(files.ca, ca_pem, 0o644)
        fsync_dir(folder)
        log.info("generated a TLS certificate for %s signed by a local CA: clients may trust %s",
                 hostname, files.ca)
    return files
