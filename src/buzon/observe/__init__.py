"""Observation over HTTP: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

:mod:`~buzon.observe.exposition` turns the counters into Prometheus metric
families at scrape time; :mod:`~buzon.observe.httpd` is the small HTTP/1.1
listener that serves them on the server's event loop; :mod:`~buzon.observe.ready`
says whether the queue can take mail. The composition root (``app``) wires them
on the process that owns the counters' totals (docs/metrics.md#prometheus).
"""

from buzon.observe.exposition import CONTENT_TYPE, METRICS, Metric, registry_for, render
from buzon.observe.httpd import Answer, HttpListener, parse_request, start_http
from buzon.observe.ready import queue_problem
from buzon.observe.routes import routes

__all__ = [
    "CONTENT_TYPE",
    "METRICS",
    "Answer",
    "HttpListener",
    "Metric",
    "parse_request",
    "queue_problem",
    "registry_for",
    "render",
    "routes",
    "start_http",
]
