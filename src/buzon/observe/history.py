"""The dashboard's long history, read from Prometheus when one is configured.

Theory of operation
-------------------
The server keeps five minutes of one-second samples (:mod:`buzon.observe.stats`);
they are gone after a restart. With ``BUZON_DASHBOARD_PROMETHEUS`` naming the
Prometheus that scrapes this server (the ``monitoring`` Compose profile's), the
page's ``/api/history`` also asks it, once per page load, for the last
``BUZON_DASHBOARD_HISTORY`` seconds of the same series, one point per
:data:`STEP` seconds, through the HTTP API's ``query_range``:

======================  =====================================================
sample field            PromQL
======================  =====================================================
``rates.connections``   ``sum(rate(buzon_smtp_connections_total[1m]))``
``rates.messages``      ``sum(rate(buzon_messages_accepted_total[1m]))``
``rates.bytes``         ``sum(rate(buzon_smtp_bytes_total[1m]))``
``rates.deliveries``    ``sum(rate(buzon_deliveries_total[1m]))``
``queue_depth``         ``sum(buzon_queue_depth)``
``oldest_age``          ``max(buzon_queue_oldest_age_seconds)``
``delay_p50``/``p95``   ``histogram_quantile(q, sum by (le) (rate(...bucket[1m])))``
======================  =====================================================

and turns the answers into samples of the page's own shape, older than the
server's first local sample, so the charts draw Prometheus's hour and then the
live seconds without a seam. ``sum``/``max`` make a scaled-out deployment (several
targets) read as one. Prometheus being down, slow (3 s) or answering nonsense
costs the page only its long history: the local samples are served with the
reason, and the failure is logged once per kind.

:func:`samples_from` is pure (Prometheus's JSON in, samples out) and is tested on
answers captured from a real Prometheus; :func:`fetch` is the I/O.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["QUERIES", "STEP", "HistoryError", "fetch", "samples_from"]

#: Seconds between the points asked of Prometheus (its scrape interval in the profile).
STEP = 15
_TIMEOUT = 3.0
_DELAY = "sum by (le) (rate(buzon_delivery_delay_seconds_bucket[1m]))"
#: Sample field (a dotted path) → PromQL.
QUERIES: dict[str, str] = {
    "rates.connections": "sum(rate(buzon_smtp_connections_total[1m]))",
    "rates.messages": "sum(rate(buzon_messages_accepted_total[1m]))",
    "rates.bytes": "sum(rate(buzon_smtp_bytes_total[1m]))",
    "rates.deliveries": "sum(rate(buzon_deliveries_total[1m]))",
    "queue_depth": "sum(buzon_queue_depth)",
    "oldest_age": "max(buzon_queue_oldest_age_seconds)",
    "delay_p50": f"histogram_quantile(0.5, {_DELAY})",
    "delay_p95": f"histogram_quantile(0.95, {_DELAY})",
}
_RATES = ("connections", "messages", "bytes", "deliveries", "refused", "transform_ok",
          "transform_failed")


class HistoryError(Exception):
    """Prometheus could not give the history; the message says why (logged, shown)."""


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None  # NaN: no data in that window


def samples_from(answers: dict[str, Any], before: float | None) -> list[dict[str, Any]]:
    """Samples of the dashboard's shape from ``query_range`` answers, oldest first.

    Args:
        answers: field → Prometheus's decoded JSON for that field's query.
        before: keep only points older than this (the first local sample's time).

    Raises:
        HistoryError: an answer that is not a successful matrix.
    """
    points: dict[float, dict[str, Any]] = {}
    for field, answer in answers.items():
        if not isinstance(answer, dict) or answer.get("status") != "success":
            raise HistoryError(f"{field}: Prometheus answered {str(answer)[:120]}")
        data = answer.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise HistoryError(f"{field}: not a range result")
        for series in data.get("result") or ():
            for pair in series.get("values") or ():
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise HistoryError(f"{field}: a point is not [time, value]")
                t = _number(pair[0])
                if t is None or (before is not None and t >= before):
                    continue
                sample = points.setdefault(t, {
                    "t": t, "rates": dict.fromkeys(_RATES, 0.0), "queue_depth": 0,
                    "oldest_age": 0.0, "delay_p50": None, "delay_p95": None,
                    "source": "prometheus"})
                value = _number(pair[1])
                if field.startswith("rates."):
                    sample["rates"][field.removeprefix("rates.")] = round(value or 0.0, 3)
                elif field == "queue_depth":
                    sample[field] = int(value or 0)
                else:
                    sample[field] = None if value is None else round(value, 3)
    return [points[t] for t in sorted(points)]


def fetch(base_url: str, seconds: float, now: float,
          before: float | None) -> list[dict[str, Any]]:
    """Ask Prometheus at ``base_url`` for the last ``seconds``; blocking (run in a thread).

    Raises:
        HistoryError: unreachable, slow, an HTTP error or an answer that does not parse.
    """
    start = now - seconds
    answers: dict[str, Any] = {}
    for field, query in QUERIES.items():
        params = urllib.parse.urlencode(
            {"query": query, "start": f"{start:.3f}", "end": f"{now:.3f}", "step": STEP})
        url = f"{base_url.rstrip('/')}/api/v1/query_range?{params}"
        try:
            # The operator's URL (BUZON_DASHBOARD_PROMETHEUS), never a client's.
            with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
                answers[field] = json.loads(response.read(4 << 20))
        except (OSError, ValueError) as error:
            raise HistoryError(f"{base_url}: {error}") from None
    return samples_from(answers, before)
