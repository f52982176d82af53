"""The dashboard's sampler: once a second, the counters become rates, and the alerts are decided.

Theory of operation
-------------------
:class:`Stats` reads the same objects ``/metrics`` reads (the counters or the
supervisor's totals, the observations, the transform switch) every
``interval`` seconds on the event loop, and keeps:

* the last :data:`CHART_POINTS` samples for the charts (``/api/history``), each a
  JSON-ready dict: rates per second of connections, messages, bytes, deliveries
  and transform outcomes since the previous sample; the queue's depth and its
  oldest message's age; the delivery delay's median and 95th percentile over
  the interval (interpolated in the buckets, as Prometheus's
  ``histogram_quantile`` does); each transform stage's health; the free space
  of the data directory's file system (``statvfs`` in a thread, 2 s at most);
* the short :class:`~buzon.observe.alerts.Point` history the alert rules read,
  as long as their longest window;
* the alerts of the last sample (:func:`~buzon.observe.alerts.alerts`).

A browser polls ``/api/stats`` (the last sample and its alerts): any number of
pages cost the server one sample a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from buzon.metrics.histograms import HistogramTotals, Observations
from buzon.observe.alerts import Alert, Point, StageState, Thresholds, alerts

__all__ = ["CHART_POINTS", "Stats", "disk_free_percent", "quantile"]

log = logging.getLogger("buzon.observe")

CHART_POINTS = 300  # five minutes at one sample a second
_RATES = {"connections": "historic_connections", "messages": "mails_sent",
          "bytes": "bytes_transferred", "deliveries": "deliveries",
          "refused": "refused_messages", "transform_ok": "transform_ok",
          "transform_failed": "transform_failed"}
_DISK_TIMEOUT = 2.0


def quantile(q: float, bounds: tuple[float, ...], counts: tuple[int, ...]) -> float | None:
    """The ``q`` quantile of non-cumulative bucket ``counts``, linear within a bucket.

    None without observations; the last finite bound for the ``+Inf`` bucket.
    """
    total = sum(counts)
    if not total:
        return None
    rank, below = q * total, 0
    for i, n in enumerate(counts):
        if below + n >= rank and n:
            if i == len(bounds):
                return bounds[-1]
            low = 0.0 if i == 0 else bounds[i - 1]
            return low + (bounds[i] - low) * (rank - below) / n
        below += n
    return bounds[-1]  # pragma: no cover - rank <= total


def disk_free_percent(path: Path) -> float:
    """Free space (for unprivileged users) of ``path``'s file system, in %."""
    st = os.statvfs(path)
    return 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 100.0


class Stats:
    """Samples, history and alerts; :meth:`run` samples until cancelled."""

    def __init__(
        self,
        counters: Any,
        observations: Observations | None,
        switch: Any,
        data_dir: Path,
        limits: Thresholds,
        *,
        extra_auth_failures: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.observations = observations
        self.switch = switch
        self.data_dir = data_dir
        self.limits = limits
        self._extra_auth_failures = extra_auth_failures
        self._clock = clock
        self.samples: deque[dict[str, Any]] = deque(maxlen=CHART_POINTS)
        self.points: deque[Point] = deque()
        self.alerts: list[Alert] = []
        self._last: tuple[float, dict[str, int], HistogramTotals | None] | None = None
        # The baseline, before the listener takes its first request: failures made
        # before the first sample count too.
        self.points.append(Point(clock(), int(counters.queue_depth),
                                 int(counters.monitor_auth_failures) + extra_auth_failures()))

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.samples[-1] if self.samples else None

    def disk_free_ratio(self) -> float | None:
        """The last sample's free share of the data directory's file system (0-1)."""
        free = self.latest["disk_free_percent"] if self.samples else None
        return None if free is None else free / 100

    def sample(self, disk: float | None) -> dict[str, Any]:
        """Read everything now, record it, decide the alerts; the sample."""
        now = self._clock()
        c = self.counters
        totals = {name: int(getattr(c, field)) for name, field in _RATES.items()}
        seen = self.observations.read() if self.observations is not None else None
        delay = seen.delay if seen is not None else None
        rates: dict[str, float] = dict.fromkeys(_RATES, 0.0)
        p50 = p95 = None
        if self._last is not None:
            then, before, old_delay = self._last
            dt = max(now - then, 1e-3)
            rates = {k: max(totals[k] - before[k], 0) / dt for k in _RATES}
            if delay is not None and old_delay is not None:
                fresh = tuple(max(a - b, 0) for a, b in zip(delay.counts, old_delay.counts))
                p50 = quantile(0.5, delay.bounds, fresh)
                p95 = quantile(0.95, delay.bounds, fresh)
        self._last = (now, totals, delay)
        stages = [StageState(s.label, s.health.up, s.health.down_since)
                  for s in (seen.stages if seen is not None else ())]
        depth = int(c.queue_depth)
        auth = int(c.monitor_auth_failures) + self._extra_auth_failures()
        self.points.append(Point(now, depth, auth))
        keep = max(self.limits.queue_growth, self.limits.auth_window) + 5
        while len(self.points) > 2 and self.points[1].t <= now - keep:
            self.points.popleft()  # the first point at or before the window's start stays
        self.alerts = alerts(self.points, stages, disk, now, self.limits)
        oldest = seen.oldest_received if seen is not None else None
        sample = {
            "t": round(now, 3),
            "rates": {k: round(v, 3) for k, v in rates.items()},
            "totals": totals,
            "connections_open": int(c.concurrent_connections),
            "queue_depth": depth,
            "oldest_age": round(max(now - oldest, 0.0), 3) if oldest else 0.0,
            "delay_p50": p50, "delay_p95": p95,
            "transform": {"configured": bool(self.switch.configured),
                          "enabled": bool(self.switch.configured and self.switch.enabled)},
            "stages": [asdict(s) | {"duration_p50": quantile(0.5, st.duration.bounds,
                                                             st.duration.counts),
                                    "runs": st.duration.count}
                       for s, st in zip(stages, seen.stages if seen is not None else (),
                                        strict=True)],
            "disk_free_percent": None if disk is None else round(disk, 2),
            "auth_failures": auth,
        }
        self.samples.append(sample)
        return sample

    async def run(self, interval: float = 1.0) -> None:
        """Sample every ``interval`` seconds until cancelled; a failed sample is logged."""
        while True:
            try:
                disk: float | None = await asyncio.wait_for(
                    asyncio.to_thread(disk_free_percent, self.data_dir), _DISK_TIMEOUT)
            except (OSError, TimeoutError):
                disk = None
            try:
                self.sample(disk)
            except Exception:
                log.exception("dashboard sample failed")
            await asyncio.sleep(interval)
