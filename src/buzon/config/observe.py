"""How the server is watched: the web dashboard and the thresholds of its alerts (issue 14).

The alerts are computed by the server (:mod:`buzon.observe.alerts`) from the same
counters ``/metrics`` serves; the shipped Prometheus rules use the same defaults.
The dashboard's login is the monitor token; its sessions live in memory (a restart
logs everyone out).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

__all__ = ["ObserveSettings"]


class ObserveSettings(BaseSettings):
    """Mixed into :class:`buzon.config.server.ServerSettings` (same ``BUZON_`` prefix)."""

    dashboard: bool = Field(
        True,
        description=(
            "Serve the web dashboard (/dashboard, /api/...) on the HTTP listener; "
            "it needs BUZON_HTTP_LISTEN."
        ),
    )
    dashboard_session_lifetime: float = Field(
        3600.0, ge=60, le=7 * 86400,
        description="Seconds a dashboard login lasts (its cookie's Max-Age).",
    )
    dashboard_login_failures_per_minute: int = Field(
        5, ge=1, le=1000,
        description="Wrong dashboard tokens accepted per client address per minute; then 429.",
    )
    dashboard_prometheus: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description=(
            "URL of the Prometheus that scrapes this server (e.g. http://prometheus:9090 "
            "with the monitoring profile): the dashboard then draws its history from it, "
            "not only the last five minutes the server keeps. Unset: local samples only."
        ),
    )
    dashboard_history: float = Field(
        3600.0, ge=300, le=7 * 86400,
        description="Seconds of history the dashboard asks BUZON_DASHBOARD_PROMETHEUS for.",
    )
    alert_queue_growth: float = Field(
        600.0, ge=5, le=86400,
        description=(
            "Seconds the queue must have kept growing (never below its depth at the start "
            "of that time, and deeper now) before the dashboard raises an alert."
        ),
    )
    alert_disk_free_percent: float = Field(
        5.0, ge=0, le=100,
        description="Alert when the data directory's file system has less free space (%).",
    )
    alert_auth_failures: int = Field(
        10, ge=1, le=1_000_000,
        description=(
            "Alert when this many monitor or dashboard authentication failures happen "
            "within BUZON_ALERT_AUTH_WINDOW seconds."
        ),
    )
    alert_auth_window: float = Field(
        300.0, ge=10, le=86400,
        description="Seconds over which authentication failures are counted for the alert.",
    )

    @field_validator("dashboard_prometheus", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # Compose's ${VAR:-} passes ""
