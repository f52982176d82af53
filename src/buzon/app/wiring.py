"""Builders shared by the single-process :class:`~buzon.app.server.Server` and the
:class:`~buzon.app.supervisor.Supervisor`: transforms, the state file, the monitor,
the event loop. Each turns settings into a running part and names the setting when
it cannot.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buzon.config import ServerSettings
from buzon.metrics import Counters, load_state
from buzon.metrics.keeper import StateKeeper
from buzon.transform import Transform, build_transforms, load_key
from buzon.transform.switch import TransformSwitch

__all__ = [
    "ConfigError", "InstanceBusy", "build_recipients", "build_transform", "check_mail_layout",
    "hold_instance", "loop_factory", "message_rules", "open_http", "open_monitor",
    "restore_state",
]

log = logging.getLogger("buzon")


class ConfigError(Exception):
    """A setting that validated alone but cannot be used (e.g. an unparsable transform)."""


class InstanceBusy(OSError):
    """Another live process already serves this ``BUZON_INSTANCE`` on this data directory."""


def hold_instance(settings: ServerSettings) -> int | None:
    """Lock ``<instance dir>/lock`` for as long as this process lives (None: no instance).

    A replica's queue must have one owner: two processes recovering one spool would
    deliver its messages twice. An orchestrator can start a second task with the same
    slot while the first still runs (a start-first update, a node it lost touch with
    that is still up); the second then stops here, and is retried, instead. The kernel
    drops the lock when its process dies, however it dies (NFSv4: when its lease ends).

    Raises:
        InstanceBusy: the lock is held.
    """
    import fcntl

    if settings.instance is None:
        return None
    path = settings.instance_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InstanceBusy(
            f"BUZON_INSTANCE={settings.instance}: another server holds {path} (the same "
            f"instance twice on one data directory); retry once it has stopped"
        ) from None
    return fd


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
    settings: ServerSettings, counters: Any, switch: Any, not_ready: Callable[[], str | None],
    observations: Any = None,
) -> Any:
    """Bind the HTTP listener (/metrics, /healthz, /readyz), or None when it is off."""
    from buzon.monitor.token import load_or_create_token
    from buzon.net import parse_listen
    from buzon.observe import registry_for, routes, start_http
    from buzon.observe.alerts import Thresholds
    from buzon.observe.dashboard import dashboard_routes
    from buzon.observe.sessions import Sessions
    from buzon.observe.stats import Stats

    s = settings
    if not s.http_listen.strip():
        return None
    sessions: Sessions | None = None
    if s.dashboard:
        sessions = Sessions(await asyncio.to_thread(load_or_create_token, s),
                            lifetime=s.dashboard_session_lifetime,
                            failures_per_minute=s.dashboard_login_failures_per_minute)
    limits = Thresholds(retry_window=s.transform_retry_window, queue_growth=s.alert_queue_growth,
                        disk_free_percent=s.alert_disk_free_percent,
                        auth_failures=s.alert_auth_failures, auth_window=s.alert_auth_window)
    # The sampler runs with or without the dashboard: /metrics reads its disk figure.
    stats = Stats(counters, observations, switch, s.data_dir, limits,
                  extra_auth_failures=(lambda: 0) if sessions is None else lambda: sessions.failures)
    registry = registry_for(counters, lambda: bool(switch.configured and switch.enabled),
                            observations,
                            login_failures=None if sessions is None else lambda: sessions.failures,
                            retry_window=s.transform_retry_window if switch.configured else None,
                            disk_free=stats.disk_free_ratio)
    table = routes(registry, not_ready)
    if sessions is not None:
        table.update(dashboard_routes(stats, sessions, switch, prometheus=s.dashboard_prometheus,
                                      history_seconds=s.dashboard_history))
    return await start_http(parse_listen(s.http_listen), s.http_port, table, [stats.run()])


def message_rules(settings: ServerSettings) -> Any:
    """How the SMTP side takes messages in (``BUZON_LONG_LINES``, ``_REVERSE_DNS``...)."""
    from buzon.smtp.handler import MessageRules
    from buzon.smtp.reverse import ReverseDns

    return MessageRules(
        accept_long_lines=settings.long_lines == "accept",
        add_missing_headers=settings.add_missing_headers,
        reverse=ReverseDns(settings.reverse_dns_timeout) if settings.reverse_dns else None,
        spill_size=settings.data_spill_size,
    )


def check_mail_layout(settings: ServerSettings) -> None:
    """Refuse to start on a mail root that still holds Maildirs of the ``<root>/<local>/`` layout.

    Raises:
        ConfigError: naming how many, the first few and the command that moves them.
    """
    from buzon.storage.layout import legacy_maildirs

    found = legacy_maildirs(settings.mail_dir)
    if found:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise ConfigError(
            f"{settings.mail_dir} holds {len(found)} mailbox(es) of the old layout "
            f"<mail root>/<local>/ ({shown}); mail now goes to <mail root>/<domain>/<local>/: "
            f"move them with `buzon-admin migrate-mailboxes --domain <domain>` "
            f"(--dry-run first; see docs/directory.md)"
        )


def build_recipients(settings: ServerSettings, *, announce: bool = True) -> Any:
    """The recipient directory the settings describe, loaded and checked (one per process).

    Logs what it accepts when ``announce`` (one process of several stays quiet):
    a WARNING when every domain is (development behaviour).

    Raises:
        ConfigError: a domain in ``BUZON_DOMAINS`` that is not one, or a users file
            that cannot be used (its line named), or ``BUZON_POSTMASTER`` nowhere.
    """
    from buzon.directory import DirectoryConfig, Recipients, UsersFileError, parse_domains
    from buzon.directory.resolve import host_domain

    s = settings
    try:
        domains = parse_domains(s.domains)
    except ValueError as error:
        raise ConfigError(f"BUZON_DOMAINS: {error}") from None
    config = DirectoryConfig(
        domains=domains,
        default_domain=domains.exact[0] if domains.exact else host_domain(s.hostname),
        delimiters=s.recipient_delimiter,
        postmaster=s.postmaster,
        users_file=s.users_file,
    )
    try:
        recipients = Recipients(config, interval=s.users_reload_interval)
    except UsersFileError as error:
        raise ConfigError(str(error)) from None
    if not announce:
        return recipients
    if domains.every:
        log.warning(
            "BUZON_DOMAINS is unset: accepting mail for every domain (development "
            "behaviour; set it to the domains this server receives for)"
        )
    directory = recipients.directory
    if s.users_file is None:
        log.info("no BUZON_USERS_FILE: every local part of an accepted domain is a mailbox")
    else:
        log.info("users file %s: %d mailbox(es), %d alias(es)",
                 s.users_file, directory.users, directory.aliases)
    return recipients


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
