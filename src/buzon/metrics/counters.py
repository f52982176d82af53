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
- ``spool_quarantined``: queue segments moved to ``corrupt/`` because a record in
  them did not read back (each one also logged, naming the segment and the fault).

The values only grow (except ``concurrent_connections``); the monitor protocol
carries 32 bits, so :func:`wire_u32` saturates at 2**32-1 instead of wrapping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["Counters", "PERSISTED", "U32_MAX", "wire_u32"]

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

    def snapshot(self) -> dict[str, int]:
        """The persisted subset, as plain ints (concurrent connections are not)."""
        data = asdict(self)
        return {name: data[name] for name in PERSISTED}

    def restore(self, data: dict[str, object]) -> None:
        """Load a snapshot; unknown keys and non-integer values are ignored."""
        for name in PERSISTED:
            value = data.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, name, value)


PERSISTED: tuple[str, ...] = tuple(
    f.name for f in fields(Counters) if f.name != "concurrent_connections"
)
