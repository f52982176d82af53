"""Builders shared by the single-process :class:`~buzon.app.server.Server` and the
:class:`~buzon.app.supervisor.Supervisor`: transforms, the state file, the monitor,
the event loop. Each turns settings into a running part and names the setting when
it cannot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buzon.config import ServerSettings
from buzon.metrics import Counters, load_state
from buzon.metrics.keeper import StateKeeper
from buzon.transform import Transform, build_transforms, load_key
from buzon.transform.switch import TransformSwitch

__all__ = [
    "ConfigError", "build_transform", "loop_factory", "open_http", "open_monitor", "restore_state",
]

log = logging.getLogger("buzon")


class ConfigError(Exception):
    """A setting that validated alone but cannot be used (e.g. an unparsable transform)."""


def build_transform(settings: ServerSettings, work_root: Path) -> Transform | None:
    """The transform chain the settings ask for, or None.

    Sidecars need the deployment key (``BUZON_TRANSFORM_KEY_FILE``); a local
    program needs none.

    Raises:
        ConfigError: naming the setting, when it cannot be parsed or the key
            is missing or unreadable.
    """
    s = settings
    if not (s.transform or s.transform_sidecars):
        return None
    key = None
    if s.transform_sidecars and s.transform_sidecars.strip():
        if s.transform_key_file is None:
            raise ConfigError(
                "BUZON_TRANSFORM_KEY_FILE: sidecars are configured (BUZON_TRANSFORM_SIDECARS) "
                "but no key file: set it to the file holding the deployment key the sidecars "
                "read (python -m buzon.transform.keygen FILE makes one)"
            )
        try:
            key = load_key(s.transform_key_file)
        except ValueError as error:
            raise ConfigError(f"BUZON_TRANSFORM_KEY_FILE: {error}") from None
    try:
        return build_transforms(
            s.transform,
            s.transform_sidecars,
            work_root=work_root,
            timeout=s.transform_timeout,
            max_output=s.max_message_size * 2,
            fsync=s.fsync,
            key=key,
        )
    except ValueError as error:
        name = "BUZON_TRANSFORM_SIDECARS" if s.transform_sidecars else "BUZON_TRANSFORM"
        raise ConfigError(f"{name}: {error}") from None


def restore_state(
    keeper: StateKeeper,
    settings: ServerSettings,
    *,
    configured: bool,
    into: Counters,
    on_change: Callable[[bool], None] | None = None,
) -> TransformSwitch:
    """Load the state file's counters ``into`` the given ones; the switch it restores.

    The operator's last switch wins over ``BUZON_TRANSFORM_ENABLED`` (issue 4).
    ``on_change`` (default: ``keeper.switch_changed``) runs on every switch and
    must save it; if it raises, the switch is rolled back.
    """
    state = load_state(keeper.path)
    counters = state.get("counters")
    if isinstance(counters, dict):
        into.restore(counters)
    enabled = state.get("transform_enabled")
    if not isinstance(enabled, bool):
        enabled = settings.transform_enabled if settings.transform_enabled is not None else True
    switch = TransformSwitch(
        configured=configured, enabled=enabled, on_change=on_change or keeper.switch_changed
    )
    keeper.switch = switch
    return switch


async def open_monitor(
    settings: ServerSettings, counters: Any, switch: Any
) -> tuple[list[tuple[str, int]], list[asyncio.BaseTransport]]:
    """Bind the UDP monitor as the settings say; its addresses and transports."""
    from buzon.monitor.server import start_monitor
    from buzon.monitor.token import load_or_create_token

    token = await asyncio.to_thread(load_or_create_token, settings)
    transports = await start_monitor(
        settings.monitor_hosts,
        settings.monitor_port,
        counters=counters,
        token=token,
        switch=switch,
        failures_per_minute=settings.monitor_auth_failures_per_minute,
    )
    return [t.get_extra_info("sockname")[:2] for t in transports], list(transports)


async def open_http(
    settings: ServerSettings, counters: Any, switch: Any, not_ready: Callable[[], str | None]
) -> Any:
    """Bind the HTTP listener (/metrics, /healthz, /readyz), or None when it is off."""
    from buzon.net import parse_listen
    from buzon.observe import registry_for, routes, start_http

    if not settings.http_listen.strip():
        return None
    registry = registry_for(counters, lambda: bool(switch.configured and switch.enabled))
    return await start_http(
        parse_listen(settings.http_listen), settings.http_port, routes(registry, not_ready)
    )


def loop_factory(name: str) -> Any:
    """uvloop when asked for and installed (it cuts the loop's own CPU cost), else asyncio."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using the asyncio event loop")
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop
