"""How messages are taken in: trace headers, missing headers, long lines, SMTPUTF8 (issue 12)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

__all__ = ["MessageSettings"]


class MessageSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""
