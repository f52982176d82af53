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
additions. The histograms, the oldest queued message's age and each transform
stage's health come the same way from :class:`~buzon.metrics.histograms.Observations`
(per-worker slots summed at read time). The registry is our own (no process or GC collectors: under a
supervisor they would describe the supervisor, not the workers that serve).

Prometheus values are 64-bit floats: exact up to 2**53.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.core import Metric as Family
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from buzon.metrics.counters import GAUGES, REFUSAL_FIELDS, Counters
from buzon.metrics.histograms import HistogramTotals, Observations

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
    Metric("spam_junked", "buzon_spam_junked",
           "Messages delivered into the recipients' Junk folders by the junk rule."),
    Metric("spam_discarded", "buzon_spam_discarded",
           "Messages not delivered because their spam score passed the discard threshold."),
    Metric("deliveries", "buzon_deliveries",
           "Messages delivered to every recipient's Maildir and released from the queue."),
    Metric("queue_depth", "buzon_queue_depth",
           "Messages queued and not yet delivered, now (being transformed or written, "
           "waiting for a retry, or held)."),
    Metric("queue_limit", "buzon_queue_limit",
           "Queue depth at which new messages are refused with 452 4.3.1 (BUZON_QUEUE_LIMIT, "
           "summed over worker processes; 0: no limit)."),
    Metric("queue_delayed", "buzon_queue_delayed",
           "Messages that waited before their 250 because the queue was past "
           "BUZON_QUEUE_DELAY_AT (delivery behind intake)."),
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

assert {m.counter for m in METRICS} | set(REFUSAL_FIELDS) == set(Counters.__dataclass_fields__), (
    "a counter unexposed")


class _Collector:
    """Yields every metric of :data:`METRICS`, and the transform switch, from live objects."""

    def __init__(self, counters: Any, switch_enabled: Callable[[], bool],
                 observations: Observations | None,
                 clock: Callable[[], float],
                 login_failures: Callable[[], int] | None,
                 retry_window: float | None,
                 disk_free: Callable[[], float | None] | None) -> None:
        self._login_failures = login_failures
        self._retry_window = retry_window
        self._disk_free = disk_free
        self._counters = counters
        self._switch_enabled = switch_enabled
        self._observations = observations
        self._clock = clock

    def collect(self) -> Iterator[Family]:
        for metric in METRICS:
            value = int(getattr(self._counters, metric.counter))
            kind = GaugeMetricFamily if metric.gauge else CounterMetricFamily
            yield kind(metric.name, metric.help, value=value)
        refusals = CounterMetricFamily(
            "buzon_smtp_refusals",
            "SMTP replies that refused something, by reply code: every 4xx/5xx answer to a "
            "command, and the 421 of a connection over a limit ('other': any other code).",
            labels=["code"])
        for name in REFUSAL_FIELDS:
            refusals.add_metric([name.removeprefix("refused_")], int(getattr(self._counters, name)))
        yield refusals
        yield GaugeMetricFamily(
            "buzon_transform_enabled",
            "1 when transforms are applied to new mail now, else 0 (monitor: status).",
            value=int(self._switch_enabled()),
        )
        if self._observations is not None:
            yield from self._observed(self._observations)
        if self._retry_window is not None:
            yield GaugeMetricFamily(
                "buzon_transform_retry_window_seconds",
                "BUZON_TRANSFORM_RETRY_WINDOW: how long a failing transform is retried "
                "(the sidecar-down alert's threshold).", value=self._retry_window)
        free = self._disk_free() if self._disk_free is not None else None
        if free is not None:
            yield GaugeMetricFamily(
                "buzon_data_disk_free_ratio",
                "Free share (0-1) of the data directory's file system, sampled each second.",
                value=free)
        if self._login_failures is not None:
            yield CounterMetricFamily(
                "buzon_dashboard_login_failures",
                "Dashboard logins refused for a wrong token, since the start.",
                value=self._login_failures())

    def _observed(self, observations: Observations) -> Iterator[Family]:
        seen = observations.read()
        delay = HistogramMetricFamily(
            "buzon_delivery_delay_seconds",
            "Seconds from a message's 250 to its files renamed into every recipient's new/.")
        delay.add_metric([], _buckets(seen.delay), seen.delay.sum)
        yield delay
        age = 0.0 if seen.oldest_received is None else self._clock() - seen.oldest_received
        yield GaugeMetricFamily(
            "buzon_queue_oldest_age_seconds",
            "Age of the oldest message queued and not yet delivered (0: none).",
            value=max(age, 0.0))
        duration = HistogramMetricFamily(
            "buzon_transform_duration_seconds",
            "Seconds each transform stage took per attempt, success or failure.",
            labels=["sidecar"])
        up = GaugeMetricFamily(
            "buzon_sidecar_up",
            "1 when the stage's last attempt got an answer, 0 when it could not reach it "
            "(refused, timeout, not found); absent before its first attempt.",
            labels=["sidecar"])
        down = GaugeMetricFamily(
            "buzon_sidecar_down_seconds",
            "Seconds since the stage's first unreachable attempt after its last answer "
            "(0 when up); absent before its first attempt.",
            labels=["sidecar"])
        now = self._clock()
        for stage in seen.stages:
            duration.add_metric([stage.label], _buckets(stage.duration), stage.duration.sum)
            if stage.health.up is not None:
                up.add_metric([stage.label], int(stage.health.up))
                since = stage.health.down_since
                down.add_metric([stage.label], 0.0 if since is None else max(now - since, 0.0))
        yield duration
        yield up
        yield down


def _buckets(hist: HistogramTotals) -> list[tuple[str, float]]:
    return [(floatToGoString(le), count) for le, count in hist.cumulative()]


def registry_for(counters: Any, switch_enabled: Callable[[], bool],
                 observations: Observations | None = None,
                 clock: Callable[[], float] = time.time,
                 login_failures: Callable[[], int] | None = None,
                 retry_window: float | None = None,
                 disk_free: Callable[[], float | None] | None = None) -> CollectorRegistry:
    """A registry holding only Buzón's collector over ``counters`` (attributes by name)
    and, when given, ``observations`` (histograms, queue age, stage health)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = _Collector(counters, switch_enabled, observations, clock, login_failures,
                           retry_window, disk_free)
    registry.register(collector)  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``, read now."""
    return generate_latest(registry)
