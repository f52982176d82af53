"""The counters as Prometheus metric families, read at scrape time.

Theory of operation
-------------------
Nothing is counted twice: the server keeps counting into its
:class:`~buzon.metrics.Counters` (or, under a supervisor,
:class:`~buzon.metrics.shared.Totals`, the sum of every worker's slot), and a
scrape reads each counter once through :class:`_Collector`, a custom
``prometheus_client`` collector that yields a ``CounterMetricFamily`` or
``GaugeMetricFamily`` per entry of :data:`METRICS`. So the numbers are exactly
the monitor's, across workers too, and the hot paths stay plain integer
additions. The registry is our own (no process or GC collectors: under a
supervisor they would describe the supervisor, not the workers that serve).

Prometheus values are 64-bit floats: exact up to 2**53.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.core import Metric as Family
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from buzon.metrics.counters import GAUGES, Counters

__all__ = ["CONTENT_TYPE", "METRICS", "Metric", "registry_for", "render"]

#: The text format 0.0.4, which every Prometheus (2.x and 3.x) parses; the body
#: ``generate_latest`` writes is valid in it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


@dataclass(frozen=True, slots=True)
class Metric:
    """One exposed metric, read from one counter."""

    counter: str
    """The :class:`~buzon.metrics.Counters` field it reads."""
    name: str
    """Its Prometheus name, ``buzon_`` prefixed; a counter gets ``_total`` when exposed."""
    help: str
    """The ``# HELP`` line (definitions in docs/metrics.md)."""

    @property
    def gauge(self) -> bool:
        return self.counter in GAUGES

    @property
    def exposed(self) -> str:
        """The sample's name in the exposition: ``_total`` added to a counter's."""
        return self.name if self.gauge else self.name + "_total"


METRICS: tuple[Metric, ...] = (
    Metric("historic_connections", "buzon_smtp_connections",
           "TCP connections the SMTP listener accepted, since the first start "
           "(monitor: historic)."),
    Metric("concurrent_connections", "buzon_smtp_connections_open",
           "SMTP sessions open now (monitor: concurrent)."),
    Metric("bytes_transferred", "buzon_smtp_bytes",
           "Bytes read from and written to SMTP clients, since the first start (monitor: bytes)."),
    Metric("mails_sent", "buzon_messages_accepted",
           "Messages answered 250 at the end of DATA, since the first start (monitor: mails)."),
    Metric("refused_messages", "buzon_messages_refused",
           "Messages received whole but refused at the end of DATA because the queue "
           "could not store them."),
    Metric("tls_sessions", "buzon_smtp_tls_sessions",
           "TLS handshakes completed on SMTP connections (STARTTLS or implicit TLS)."),
    Metric("deliveries", "buzon_deliveries",
           "Messages delivered to every recipient's Maildir and released from the queue."),
    Metric("queue_depth", "buzon_queue_depth",
           "Messages queued and not yet delivered, now (being transformed or written, "
           "waiting for a retry, or held)."),
    Metric("transform_ok", "buzon_transform_ok", "Transform runs that succeeded."),
    Metric("transform_failed", "buzon_transform_failed",
           "Transform runs that failed (every attempt)."),
    Metric("transform_retried", "buzon_transform_retried",
           "Failed transform runs deferred for a retry."),
    Metric("transform_fallback", "buzon_transform_fallback",
           "Messages delivered untransformed, with a header, under the 'deliver' failure policy."),
    Metric("spool_quarantined", "buzon_spool_quarantined",
           "Queue segments moved to spool corrupt/ because a record did not read back."),
    Metric("monitor_requests", "buzon_monitor_requests",
           "Datagrams the UDP monitor received, answered or not."),
    Metric("monitor_auth_failures", "buzon_monitor_auth_failures",
           "UDP monitor requests answered 'wrong token'."),
)

assert {m.counter for m in METRICS} == set(Counters.__dataclass_fields__), "a counter unexposed"


class _Collector:
    """Yields every metric of :data:`METRICS`, and the transform switch, from live objects."""

    def __init__(self, counters: Any, switch_enabled: Callable[[], bool]) -> None:
        self._counters = counters
        self._switch_enabled = switch_enabled

    def collect(self) -> Iterator[Family]:
        for metric in METRICS:
            value = int(getattr(self._counters, metric.counter))
            kind = GaugeMetricFamily if metric.gauge else CounterMetricFamily
            yield kind(metric.name, metric.help, value=value)
        yield GaugeMetricFamily(
            "buzon_transform_enabled",
            "1 when transforms are applied to new mail now, else 0 (monitor: status).",
            value=int(self._switch_enabled()),
        )


def registry_for(counters: Any, switch_enabled: Callable[[], bool]) -> CollectorRegistry:
    """A registry holding only Buzón's collector over ``counters`` (attributes by name)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counters, switch_enabled))  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``, read now."""
    return generate_latest(registry)
