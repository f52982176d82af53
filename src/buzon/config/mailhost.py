"""Mail-host settings: accepted domains and the recipient directory (issue 12)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

__all__ = ["MailHostSettings"]


class MailHostSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""
