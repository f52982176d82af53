"""The server's counters (SPEC §5) and their saturating view for the wire.

Definitions, as documented in docs/metrics.md:

- ``historic_connections``: TCP connections the SMTP listener ever accepted.
- ``concurrent_connections``: SMTP connections open right now (not persisted).
- ``bytes_transferred``: bytes read from and written to SMTP clients.
- ``mails_sent``: messages answered ``250`` at the end of DATA (one per message,
  whatever its number of recipients).
- ``transform_*``: outcomes of the transform stage (successes, failures, retries,
  deliveries of the original under the failure policy).
- ``monitor_auth_failures``: monitor requests refused for a bad token.
- ``deliveries``: messages that left the queue delivered: a copy in ``new/`` of
  every recipient's Maildir, then the queue record released (one per message).
- ``refused_messages``: messages whose whole body was received but that were
  answered 4xx/5xx by the handler at the end of DATA (the queue write failed);
  see docs/metrics.md for what is not (yet) counted.
- ``tls_sessions``: TLS handshakes completed on SMTP connections (STARTTLS or
  the implicit-TLS listener).
- ``spam_junked`` / ``spam_discarded``: messages the junk rule (``BUZON_JUNK_*``)
  filed into recipients' Junk folders / did not deliver at all.
- ``refused_<code>`` (and ``refused_other``): SMTP replies that refused something,
  by reply code: every 4xx/5xx answer to a command, and the 421 a connection over a
  limit gets before its session starts (see :data:`REFUSAL_CODES`).
- ``queue_depth``: messages queued and not yet delivered, a gauge (not persisted):
  being transformed or delivered, or waiting for a retry.
- ``queue_limit``: the depth at which new messages are refused (``BUZON_QUEUE_LIMIT``,
  summed over worker processes; 0: no limit), a gauge (not persisted).
- ``queue_delayed``: messages that waited before their ``250`` because the queue was
  past ``BUZON_QUEUE_DELAY_AT`` (back-pressure, :mod:`buzon.spool.backpressure`).
- ``spool_quarantined``: queue segments moved to ``corrupt/`` because a record in
  them did not read back (each one also logged, naming the segment and the fault).

The values only grow (except the gauges ``concurrent_connections`` and
``queue_depth``, ``queue_limit``); monitor v0 carries 32 bits, so :func:`wire_u32` saturates at
2**32-1 instead of wrapping (v1 carries 64, saturating at 2**64-1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = [
    "GAUGES", "PERSISTED", "REFUSAL_CODES", "REFUSAL_FIELDS", "U32_MAX", "Counters",
    "count_refusal", "wire_u32",
]

U32_MAX = 0xFFFF_FFFF


def wire_u32(value: int) -> int:
    """Clamp a counter into the monitor protocol's uint32 (saturating, never wrapping)."""
    return min(max(value, 0), U32_MAX)


@dataclass(slots=True)
class Counters:
    """Mutable counters owned by the server's event loop (single-threaded, no locks)."""

    historic_connections: int = 0
    concurrent_connections: int = 0
    bytes_transferred: int = 0
    mails_sent: int = 0
    transform_ok: int = 0
    transform_failed: int = 0
    transform_retried: int = 0
    transform_fallback: int = 0
    monitor_requests: int = 0
    monitor_auth_failures: int = 0
    spool_quarantined: int = 0
    deliveries: int = 0
    refused_messages: int = 0
    tls_sessions: int = 0
    spam_junked: int = 0
    spam_discarded: int = 0
    queue_delayed: int = 0
    # One field per reply code Buzón answers (replies.py): fixed fields, so they live in
    # the workers' shared slots and the state file like every other counter.
    refused_421: int = 0
    refused_450: int = 0
    refused_451: int = 0
    refused_452: int = 0
    refused_500: int = 0
    refused_501: int = 0
    refused_502: int = 0
    refused_503: int = 0
    refused_504: int = 0
    refused_530: int = 0
    refused_550: int = 0
    refused_552: int = 0
    refused_553: int = 0
    refused_554: int = 0
    refused_other: int = 0
    queue_depth: int = 0
    queue_limit: int = 0

    def snapshot(self) -> dict[str, int]:
        """The persisted subset, as plain ints (the gauges are not)."""
        data = asdict(self)
        return {name: data[name] for name in PERSISTED}

    def restore(self, data: dict[str, object]) -> None:
        """Load a snapshot; unknown keys and non-integer values are ignored."""
        for name in PERSISTED:
            value = data.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, name, value)


GAUGES: tuple[str, ...] = ("concurrent_connections", "queue_depth", "queue_limit")
"""Counters that describe the present, not a history: never persisted."""

PERSISTED: tuple[str, ...] = tuple(f.name for f in fields(Counters) if f.name not in GAUGES)

#: The reply codes counted one by one; any other 4xx/5xx is ``refused_other``.
REFUSAL_CODES: tuple[str, ...] = tuple(
    f.name.removeprefix("refused_") for f in fields(Counters)
    if f.name.startswith("refused_") and f.name[-3:].isdigit()
)
REFUSAL_FIELDS: tuple[str, ...] = (*(f"refused_{c}" for c in REFUSAL_CODES), "refused_other")
_REFUSAL_FIELD = {code.encode(): f"refused_{code}" for code in REFUSAL_CODES}


def count_refusal(counters: Counters, reply: bytes) -> None:
    """Count one refusing reply line (``b"550 5.1.1 ..."``) under its code."""
    setattr(counters, name := _REFUSAL_FIELD.get(reply[:3], "refused_other"),
            getattr(counters, name) + 1)
