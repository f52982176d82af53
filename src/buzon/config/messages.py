"""How messages are taken in: trace headers, missing headers, long lines, SMTPUTF8 (issue 12).

The choices, and why these defaults:

* ``long_lines``: RFC 5321 §4.5.3.1.6 caps a line at 1,000 octets and lets a
  server refuse longer ones (``500 5.5.2``, today's behaviour: ``refuse``).
  Real mail breaks it (HTML on one line, generated reports) and Postfix
  accepts such lines: its ``line_length_limit`` (2048) only cuts them into
  queue records, "upon delivery, long lines are reconstructed" (postconf(5)).
  So the default is ``accept``: the line is stored intact, byte for byte.
* ``reverse_dns``: ``Received:`` names the client as its DNS PTR name, and only
  if that name resolves back to the client's address ("forward-confirmed", as
  Postfix's ``smtpd`` does); otherwise ``unknown``. The look-up is bounded by
  ``reverse_dns_timeout`` and cached; off, the name is always ``unknown``.
* ``add_missing_headers``: ``Date:`` and ``Message-ID:`` when the message has
  none. Postfix's ``always_add_missing_headers`` is ``no`` by default: since 2.6
  its cleanup(8) adds them only for clients matching
  ``local_header_rewrite_clients`` (by default ``permit_inet_interfaces``: the
  machine's own addresses), because adding a header that a DKIM signature
  declared absent breaks the signature. Buzón is the last stop (it delivers to
  Maildirs), readers and filters want both headers, and the DKIM risk is met
  differently: a message carrying ``DKIM-Signature:`` never gets either.
* ``data_spill_size``: 128 KiB keeps the common message (and the benchmark's
  100 KB one) in memory, where it is queued with its batch in one write; a
  larger one streams to disk as it arrives (issue 16: 100 sessions of 10 MB
  took 746 MB when each body was held whole).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

__all__ = ["MessageSettings"]


class MessageSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""

    long_lines: str = Field(
        "accept",
        pattern="^(accept|refuse)$",
        description=(
            "Body lines over 1,000 octets (RFC 5321 §4.5.3.1.6): 'accept' and store them "
            "intact, as Postfix does, or 'refuse' the message with 500 5.5.2."
        ),
    )
    data_spill_size: int = Field(
        128 * 1024,
        ge=4096,
        le=1 << 30,
        description=(
            "Bytes of a message kept in memory while DATA arrives; the rest is written to "
            "the queue directory as it comes, so memory per session stays bounded."
        ),
    )
    reverse_dns: bool = Field(
        True,
        description=(
            "Look up the client's DNS name for the Received: header, forward-confirmed "
            "(the name must resolve back to the address) as Postfix does; off or "
            "unconfirmed: 'unknown'."
        ),
    )
    reverse_dns_timeout: float = Field(
        2.0,
        gt=0,
        le=30,
        description=(
            "Seconds the reverse DNS look-up (both steps) may take; past it the name "
            "is 'unknown'. The session never waits longer."
        ),
    )
    add_missing_headers: bool = Field(
        True,
        description=(
            "Add Date: (the time of the 250) and Message-ID: <queue id@hostname> to a "
            "message that lacks them, except one with a DKIM-Signature: header."
        ),
    )
