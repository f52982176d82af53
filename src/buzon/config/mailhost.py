"""Mail-host settings: accepted domains, the recipient directory, junk filing (issues 12, 13).

The values are checked as text here; :mod:`buzon.directory` turns them into
IDNA A-labels and mailboxes at start (``app/wiring.py``), where a domain that is
not one stops start-up with the setting named. docs/directory.md tells the rules.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings

__all__ = ["MailHostSettings"]


class MailHostSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""

    domains: str = Field(
        "",
        max_length=65_536,
        description=(
            "Comma-separated domains this server takes mail for: 'example.org', or "
            "'*.example.org' for every subdomain; any other gets 550 5.7.1 at RCPT. "
            "Empty: every domain (development only; logged at start)."
        ),
    )
    users_file: Path | None = Field(
        None,
        description=(
            "The users file (Dovecot passwd-file format: mailboxes, aliases, catch-alls), "
            "reread when it changes; unknown recipients get 550 5.1.1. Unset: every "
            "local part of an accepted domain is a mailbox. Edit it with buzon-admin."
        ),
    )
    postmaster: str | None = Field(
        None,
        min_length=3,
        max_length=254,
        description=(
            "Address that postmaster@ each accepted domain goes to when the users file has "
            "no line of its own for it (RFC 5321 §4.5.1); must be a mailbox or alias there."
        ),
    )
    recipient_delimiter: str = Field(
        "+",
        pattern=r"^[-+=_.]{0,4}$",
        description=(
            "Subaddress delimiters: user+tag@ delivers to user@ (like Postfix's "
            "recipient_delimiter; each character is one). Empty: off."
        ),
    )
    users_reload_interval: float = Field(
        1.0,
        ge=0.1,
        le=3600,
        description="Seconds between checks (one stat) of whether the users file changed.",
    )
    junk_header: str = Field(
        "X-Spam-Status",
        pattern=r"^[!-9;-~]{1,76}$",
        description=(
            "Header a filter in the transform chain marks spam with (its first 'score=N', "
            "a bare number, or yes/true); read only from transformed messages."
        ),
    )
    junk_threshold: float = Field(
        5.0,
        ge=-1000,
        le=100_000,
        description="Score at or above which a message goes to the mailbox's Junk folder.",
    )
    junk_discard_threshold: float | None = Field(
        None,
        ge=-1000,
        le=100_000,
        description=(
            "Score at or above which a message is not delivered at all (counted and logged); "
            "above the junk threshold. Unset: spam is never discarded."
        ),
    )

    @model_validator(mode="after")
    def _discard_above_junk(self) -> MailHostSettings:
        if self.junk_discard_threshold is not None and (
            self.junk_discard_threshold <= self.junk_threshold
        ):
            # Otherwise every message bound for Junk would be thrown away instead.
            raise ValueError("BUZON_JUNK_DISCARD_THRESHOLD must be above BUZON_JUNK_THRESHOLD")
        return self

    @field_validator("users_file", "postmaster", "junk_discard_threshold", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes ${BUZON_USERS_FILE:-} as "": unset, not the path ".".
        return None if value == "" else value
