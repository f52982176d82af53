"""TLS settings: STARTTLS, the implicit-TLS listener, certificate files (issue 12).

STARTTLS (RFC 3207) is on by default: with no certificate files configured a
small local CA and a server certificate signed by it are generated at first
start into ``<data_dir>/tls/`` (see :mod:`buzon.tls.certs`). The implicit-TLS
listener (RFC 8314) is off until ``BUZON_TLS_LISTEN`` names addresses. The
checks that need the files themselves (readable, key matches certificate) run
at start-up in :mod:`buzon.tls.context`, which names the setting at fault.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings

from buzon.net import parse_listen

__all__ = ["TlsSettings"]


class TlsSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""

    tls: bool = Field(
        True,
        description=(
            "Offer STARTTLS (RFC 3207). With no certificate files a local CA and a server "
            "certificate for BUZON_HOSTNAME are generated at first start into <data_dir>/tls/ "
            "(clients can trust ca.pem there). Off: cleartext only."
        ),
    )
    tls_cert_file: Path | None = Field(
        None,
        description=(
            "PEM certificate chain (server certificate first) for STARTTLS and implicit TLS; "
            "set together with BUZON_TLS_KEY_FILE. Reloaded when the file changes."
        ),
    )
    tls_key_file: Path | None = Field(
        None,
        description=(
            "PEM private key (unencrypted) of BUZON_TLS_CERT_FILE. Reloaded when the file changes."
        ),
    )
    tls_listen: str = Field(
        "",
        description=(
            "Comma-separated addresses of the implicit-TLS listener (RFC 8314: TLS from the "
            "first byte, the convention of port 465); empty: no such listener."
        ),
    )
    smtps_port: int = Field(
        4650,
        ge=0,
        le=65535,
        description=(
            "TCP port of the implicit-TLS listener (publish it as 465; unprivileged by default "
            "as 2525 is for 25)."
        ),
    )
    require_tls: bool = Field(
        False,
        description=(
            "Refuse MAIL before STARTTLS (530 5.7.0). Leave off on a public MX: RFC 3207 §4 "
            "forbids it there, since other servers may not speak TLS."
        ),
    )
    tls_reload_interval: float = Field(
        1.0,
        gt=0,
        le=3600,
        description=(
            "At most one check per this many seconds, when a client starts TLS, of whether the "
            "certificate or key file changed (mtime, size, inode); a changed pair is loaded for "
            "new sessions."
        ),
    )

    @field_validator("tls_listen")
    @classmethod
    def _check_tls_listen(cls, value: str, info: ValidationInfo) -> str:
        if value.strip():  # empty: no implicit-TLS listener
            parse_listen(value)
            if not info.data.get("tls", True):
                raise ValueError("an implicit-TLS listener needs BUZON_TLS on")
        return value

    @field_validator("require_tls")
    @classmethod
    def _check_require(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("tls", True):
            raise ValueError("requiring STARTTLS needs BUZON_TLS on")
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _check_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Reported on the key's variable: "BUZON_TLS_KEY_FILE: ... BUZON_TLS_CERT_FILE".
        cert = info.data.get("tls_cert_file")
        if value is None and cert is not None:
            raise ValueError("not set, but BUZON_TLS_CERT_FILE is: set both or neither")
        if value is not None and cert is None and "tls_cert_file" in info.data:
            raise ValueError("set, but BUZON_TLS_CERT_FILE is not: set both or neither")
        return value

    @property
    def tls_hosts(self) -> tuple[str, ...]:
        """Addresses of the implicit-TLS listener; empty when it is off."""
        return parse_listen(self.tls_listen) if self.tls and self.tls_listen.strip() else ()
