"""The dashboard's alerts: a pure function of recent samples, stage health and thresholds.

Theory of operation
-------------------
:func:`alerts` decides, from what the sampler (:mod:`buzon.observe.stats`)
recorded, which critical events hold *now*; it opens nothing and reads no
clock (``now`` is passed in), so every rule is table-tested. The rules, the
same as the shipped Prometheus rules (deploy/prometheus/rules.yml):

* ``sidecar-down``: a transform stage could not be reached at its last
  attempt, and has not answered since a first failure longer ago than the
  transform retry window: past it, messages are held or delivered untransformed.
* ``queue-growing``: over the last ``queue_growth`` seconds the queue never
  drained (every sample above zero), never fell below its depth at the start
  of that time, and is deeper now. Needs that much history: no alert in the
  first ``queue_growth`` seconds after a start.
* ``disk-full``: the data directory's file system has less than
  ``disk_free_percent`` % free (the queue, and in Compose the Maildirs, live there).
* ``auth-failures``: at least ``auth_failures`` failed authentications (monitor
  requests with a wrong token, dashboard logins with a wrong one) within the
  last ``auth_window`` seconds (or since the first sample, if younger).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Alert", "Point", "StageState", "Thresholds", "alerts"]


@dataclass(frozen=True, slots=True)
class Point:
    """One sample of what the rules over time read."""

    t: float
    """Seconds since the epoch."""
    queue_depth: int
    auth_failures: int
    """Failed authentications since the start (monitor and dashboard), a counter."""


@dataclass(frozen=True, slots=True)
class StageState:
    label: str
    up: bool | None
    down_since: float | None


@dataclass(frozen=True, slots=True)
class Thresholds:
    retry_window: float
    queue_growth: float
    disk_free_percent: float
    auth_failures: int
    auth_window: float


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    """``sidecar-down``, ``queue-growing``, ``disk-full`` or ``auth-failures``."""
    text: str
    """One sentence for the banner."""


def _at_or_before(history: Sequence[Point], t: float) -> Point | None:
    """The last point no later than ``t`` (history in time order)."""
    found = None
    for point in history:
        if point.t > t:
            break
        found = point
    return found


def alerts(
    history: Sequence[Point],
    stages: Sequence[StageState],
    disk_free_percent: float | None,
    now: float,
    limits: Thresholds,
) -> list[Alert]:
    """The alerts that hold at ``now``, in the order of the module's list."""
    out: list[Alert] = []
    for stage in stages:
        if stage.up is False and stage.down_since is not None:
            down_for = now - stage.down_since
            if down_for > limits.retry_window:
                out.append(Alert("sidecar-down", (
                    f"transform {stage.label} unreachable for {down_for:.0f} s, past the "
                    f"retry window of {limits.retry_window:g} s")))
    base = _at_or_before(history, now - limits.queue_growth)
    if base is not None and history:
        window = [p for p in history if p.t >= base.t]
        last = window[-1]
        if (all(p.queue_depth > 0 and p.queue_depth >= base.queue_depth for p in window)
                and last.queue_depth > base.queue_depth):
            out.append(Alert("queue-growing", (
                f"queue growing for {limits.queue_growth:g} s: {base.queue_depth} → "
                f"{last.queue_depth} messages, never drained")))
    if disk_free_percent is not None and disk_free_percent < limits.disk_free_percent:
        out.append(Alert("disk-full", (
            f"data directory disk nearly full: {disk_free_percent:.1f} % free "
            f"(alert below {limits.disk_free_percent:g} %)")))
    if history:
        start = _at_or_before(history, now - limits.auth_window) or history[0]
        failed = history[-1].auth_failures - start.auth_failures
        if failed >= limits.auth_failures:
            out.append(Alert("auth-failures", (
                f"{failed} failed monitor/dashboard authentications in the last "
                f"{min(limits.auth_window, now - start.t):.0f} s")))
    return out
