"""TLS settings: STARTTLS, the implicit-TLS listener, certificate files (issue 12)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

__all__ = ["TlsSettings"]


class TlsSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""
