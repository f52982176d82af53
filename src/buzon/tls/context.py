"""The server's ``SSLContext``: built from a certificate and key file, reloaded when they change.

Theory of operation
-------------------
:func:`load_pair` checks the two files with ``cryptography`` before OpenSSL sees
them, so that each failure names its setting and file (``BUZON_TLS_KEY_FILE:
/etc/… is not the key of the certificate in …``) instead of OpenSSL's
``[SSL: KEY_VALUES_MISMATCH]``; then it builds a server context:

* TLS 1.2 at least (``minimum_version``); TLS 1.3 preferred by OpenSSL itself;
* Python's default cipher list: TLS 1.3's suites, and for TLS 1.2 only
  forward-secret ones (``ECDHE``/``DHE`` with AES-GCM, ChaCha20-Poly1305, or
  AES-CBC with a SHA-2 MAC; no RC4, 3DES, SHA-1 MACs or anonymous suites),
  OpenSSL security level 2. On a public MX, where TLS is opportunistic, a
  stricter list would only push some senders back to cleartext (RFC 7435);
* no TLS compression (CRIME), no renegotiation, the server's cipher order;
* no client certificates asked for (``CERT_NONE``): SMTP clients are not
  authenticated by TLS here, and aiosmtpd warns about anything else.

:class:`ServerTls` holds the current context. :meth:`ServerTls.current` is called
when a client starts TLS (STARTTLS, or a connection to the implicit-TLS
listener), and at most once per ``interval`` it compares the files' mtime, size
and inode (following symlinks, so a certbot-style ``live/`` link that moves to a
new file counts) with those of the pair it loaded. A change loads the new pair
into a new context: sessions started afterwards use it, sessions already in TLS
keep the one they shook hands with (OpenSSL keeps a reference per connection).
A new pair that does not load is logged as an ERROR naming the file, once per
change, and the old context stays: a renewal written key-then-certificate in two
steps costs one ERROR line, then loads when the second file lands.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = ["Loaded", "ServerTls", "TlsError", "load_pair"]

log = logging.getLogger("buzon.tls")

_Stamp = tuple[tuple[int, int, int, int] | None, ...]


class TlsError(Exception):
    """A certificate or key file that cannot be used; the message names the setting and file."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """A context and what to log about the certificate in it."""

    context: ssl.SSLContext
    """The server context, ready for ``SSLObject`` wrapping."""
    serial: int
    """The server certificate's serial number."""
    subject: str
    """The server certificate's subject (RFC 4514)."""
    not_after: datetime.datetime
    """When the server certificate expires (UTC)."""


def _read(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsError(f"{label}: cannot read {path}: {error.strerror or error}") from None


def load_pair(
    cert: Path,
    key: Path,
    *,
    cert_label: str = "BUZON_TLS_CERT_FILE",
    key_label: str = "BUZON_TLS_KEY_FILE",
) -> Loaded:
    """A server context for the certificate chain in ``cert`` and the key in ``key``.

    Args:
        cert: PEM file, the server certificate first, then any intermediates.
        key: PEM file with the unencrypted private key of that certificate.
        cert_label, key_label: how errors name the two files' settings.

    Raises:
        TlsError: a file is unreadable, holds no PEM certificate or key, the key
            is encrypted or is not the certificate's.
    """
    cert_data, key_data = _read(cert, cert_label), _read(key, key_label)
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise TlsError(f"{cert_label}: {cert} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TlsError(f"{key_label}: {key} is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"{key_label}: {key} holds no PEM private key") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise TlsError(f"{key_label}: {key} is not the key of the certificate in {cert}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | getattr(ssl, "OP_NO_RENEGOTIATION", 0)  # OpenSSL 1.1.0h and later
    )
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:  # changed between the check and the load
        raise TlsError(f"{cert_label}/{key_label}: {cert}, {key}: {error}") from None
    return Loaded(context, chain[0].serial_number, chain[0].subject.rfc4514_string(),
                  chain[0].not_valid_after_utc)


def _stamp(paths: tuple[Path, ...]) -> _Stamp:
    found = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(found)


class ServerTls:
    """The current server context, reloaded when its files change."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        interval: float = 1.0,
        labels: tuple[str, str] = ("BUZON_TLS_CERT_FILE", "BUZON_TLS_KEY_FILE"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the pair now.

        Raises:
            TlsError: as :func:`load_pair`; at start-up this stops the server.
        """
        self.cert, self.key = cert, key
        self._labels = labels
        self._interval = interval
        self._clock = clock
        # Stamped before loading: a change during the load is seen by the next check.
        self._stamp = _stamp((cert, key))
        self.loaded = load_pair(cert, key, cert_label=labels[0], key_label=labels[1])
        self._checked = clock()
        self.reloads = 0
        self.failures = 0

    @property
    def context(self) -> ssl.SSLContext:
        return self.loaded.context

    def current(self) -> ssl.SSLContext:
        """The context for a TLS session starting now (files checked at most once per interval)."""
        now = self._clock()
        if now - self._checked >= self._interval:
            self._checked = now
            self.check()
        return self.loaded.context

    def check(self) -> bool:
        """Reload the pair if its files changed since the last look; True when a new one loaded."""
        stamp = _stamp((self.cert, self.key))
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        old = self.loaded
        try:
            self.loaded = load_pair(
                self.cert, self.key, cert_label=self._labels[0], key_label=self._labels[1]
            )
        except TlsError as error:
            self.failures += 1
            log.error(
                "TLS certificate not reloaded: %s; new sessions keep the certificate loaded "
                "before (serial %x, %s)", error, old.serial, old.subject,
            )
            return False
        self.reloads += 1
        log.info(
            "TLS certificate reloaded from %s: serial %x, %s, expires %s",
            self.cert, self.loaded.serial, self.loaded.subject, f"{self.loaded.not_after:%Y-%m-%d}",
        )
        return True
