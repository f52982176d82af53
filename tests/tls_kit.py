"""Test helpers for TLS: a line client that can STARTTLS, certificate files, delivered mail."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from helpers import LineClient, RunningServer
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"


def client_context(cafile: Path) -> ssl.SSLContext:
    """What a careful client uses: verify the chain against ``cafile`` and the name."""
    context = ssl.create_default_context(cafile=str(cafile))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


class TlsLineClient(LineClient):
    """:class:`LineClient` that can turn its socket into TLS (after STARTTLS, or at once)."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 10.0,
                 implicit: ssl.SSLContext | None = None) -> None:
        super().__init__(port, host, timeout)
        if implicit is not None:
            self.wrap(implicit)

    def wrap(self, context: ssl.SSLContext, server_hostname: str = HOST) -> ssl.SSLSocket:
        assert not self._buf, f"cleartext left unread before TLS: {self._buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return self.sock  # type: ignore[return-value]

    def starttls(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        assert self.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        return self.wrap(context)

    @property
    def serial(self) -> int:
        der = self.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        return x509.load_der_x509_certificate(der).serial_number


def delivered(mail_root: Path) -> list[Path]:
    """Every delivered file under the mail root, whatever its mailbox layout."""
    return sorted(mail_root.rglob("new/*")) if mail_root.exists() else []


def sessions(server: RunningServer) -> list[Any]:
    """The server's open SMTP sessions (read on its own loop)."""
    async def read() -> list[Any]:
        assert server.server.hub is not None
        return list(server.server.hub.sessions)
    return server.call(read())  # type: ignore[no-any-return]


def in_loop(server: RunningServer, fn: Any) -> Any:
    """``fn()`` run on the server's event loop thread."""
    async def run() -> Any:
        return fn()
    return server.call(run())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    """A CA made by the test (not by Buzón) that signs server certificates for localhost."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("Test CA")).issuer_name(_name("Test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cafile = folder / "test-ca.pem"
        self.cafile.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, serial: int, *, rsa_key: bool = False) -> tuple[bytes, bytes]:
        """A server certificate for localhost/127.0.0.1 with ``serial``: (cert PEM, key PEM)."""
        key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key
                    else ec.generate_private_key(ec.SECP256R1()))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(_name("Test CA"))
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def replace(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` as a renewal tool would: a new file renamed over the old."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> ssl.SSLObject:
    """Run a TLS handshake in memory; the client's SSLObject (raises the client's error)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for i, (obj, out, peer_in) in enumerate(((cli, c_out, s_in), (srv, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done):
            return cli
    raise AssertionError("handshake did not finish")


def scrape(port: int) -> dict[str, float]:
    """Every sample of ``/metrics`` by name, read as Prometheus would."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {sample.name: sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}
