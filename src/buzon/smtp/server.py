"""``Server`` owns the process lifecycle: start-up, serving, bounded graceful shutdown.

Theory of operation (uvicorn's ``Server(config)`` order)
--------------------------------------------------------
``startup``: restore counters and the transform switch from the state file,
recover the spool (half-written files dropped, queued ones handed to the
delivery worker), bind the SMTP listeners on the application's own event loop
(no aiosmtpd ``Controller``: its self-connect at start would count as a
connection), bind the UDP monitor, start the periodic metrics snapshot.

``shutdown`` (on SIGTERM/SIGINT, whose handlers only set an event):
stop accepting; sessions idle between transactions get ``421`` and are closed;
sessions in a transaction get ``shutdown_grace`` seconds to finish (a DATA in
progress completes and is queued normally); the rest are aborted and counted.
Then the delivery worker stops (what it has not delivered stays queued for the
next start), the monitor closes and the counters are saved. Nothing answered
with 250 is ever lost: it is on disk before the 250 is sent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buzon.accesslog import AccessLog
from buzon.config import ServerSettings
from buzon.metrics import Counters, load_state
from buzon.metrics.keeper import StateKeeper
from buzon.metrics.shared import SharedCounters
from buzon.smtp import replies
from buzon.smtp.handler import Handler
from buzon.smtp.protocol import BuzonSMTP, Hub, Limits, refuse_busy
from buzon.spool.disk import BatchThread
from buzon.spool.queue import Spool
from buzon.spool.shards import adopt_orphans, shard_root
from buzon.spool.worker import DeliveryWorker
from buzon.transform.switch import FollowedSwitch, TransformSwitch

__all__ = ["ConfigError", "Server", "WorkerRole"]

log = logging.getLogger(__name__)

class ConfigError(Exception):
    """A setting that validated alone but cannot be used (e.g. an unparsable transform)."""


_SKIPPABLE_BIND = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


@dataclass(frozen=True)
class WorkerRole:
    """This server is worker ``index`` of ``count`` under a supervisor (:mod:`buzon.multiproc`).

    Then the supervisor owns the monitor, the state file and the transform
    switch; the worker counts into its slot of the shared ``counters`` file,
    follows the switch from there, queues into its own spool shard and binds
    the SMTP port with ``SO_REUSEPORT`` beside its siblings.
    """

    index: int
    count: int
    counters: Path


class Server:
    """A running Buzón: SMTP listeners, monitor, spool and delivery worker."""

    def __init__(self, settings: ServerSettings, role: WorkerRole | None = None) -> None:
        self.settings = settings
        self.role = role
        self.counters: Any = Counters()
        self.state_path = settings.data_dir / "state.json"
        self.keeper: StateKeeper | None = None
        self.shared: SharedCounters | None = None
        self.smtp_addresses: list[tuple[str, int]] = []
        self.monitor_addresses: list[tuple[str, int]] = []
        self._stop = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._monitor: list[asyncio.BaseTransport] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.hub: Hub | None = None
        self.worker: DeliveryWorker | None = None
        self.switch: TransformSwitch | FollowedSwitch | None = None
        self.committer: BatchThread[tuple[Any, bytes], None] | None = None

    # -- start -------------------------------------------------------------------------
    async def startup(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        s.mail_dir.mkdir(parents=True, exist_ok=True)
        role = self.role
        spool_root = s.data_dir / "spool"
        if role is None or role.index == 0:
            # Shards of workers that no longer exist (BUZON_WORKERS lowered) are
            # moved into the first spool before it is recovered: nothing queued waits forever.
            adopted = await asyncio.to_thread(
                adopt_orphans, spool_root, 1 if role is None else role.count, fsync=s.fsync
            )
            if adopted:
                log.info("adopted %d queue file(s) of workers no longer configured", adopted)
        spool = Spool(shard_root(spool_root, 0 if role is None else role.index), fsync=s.fsync)
        transform = build_configured_transform(s, spool_root)
        if role is None:
            self.keeper = StateKeeper(self.state_path, self.counters, fsync=s.fsync)
            self.switch = restore_state(
                self.keeper, s, configured=transform is not None, into=self.counters
            )
        else:
            self.shared = SharedCounters(role.counters, role.count, create=False)
            self.counters = self.shared.slot(role.index)
            shared = self.shared
            self.switch = FollowedSwitch(
                configured=transform is not None, read=lambda: shared.transform_enabled
            )
        self.worker = DeliveryWorker(
            spool,
            s.mail_dir,
            hostname=s.hostname,
            counters=self.counters,
            transform=transform,
            switch=self.switch,
            retry_window=s.transform_retry_window,
            failure_policy=s.transform_failure_policy,
            first_backoff=s.retry_backoff,
            fsync=s.fsync,
        )
        recovered = await asyncio.to_thread(spool.recover)
        if recovered:
            log.info("recovered %d queued message(s) from a previous run", len(recovered))
        self.worker.start(recovered)

        self.hub = Hub(
            Limits(
                hostname=s.hostname,
                max_message_size=s.max_message_size,
                max_recipients=s.max_recipients,
                max_line_length=s.max_line_length,
                idle_timeout=s.idle_timeout,
                data_timeout=s.data_timeout,
            ),
            self.counters,
            AccessLog(s.access_log_file),
        )
        self.committer = BatchThread("queue-commit", spool.store_many)
        self.committer.start()
        await self._start_smtp(Handler(self.committer, self.worker))
        if self.keeper is not None:
            self.monitor_addresses, self._monitor = await open_monitor(
                s, self.counters, self.switch
            )
            self._tasks.append(
                asyncio.create_task(self.keeper.snapshots(), name="metrics-snapshot")
            )
        log.info(
            "buzon %s, pid %d, SMTP on %s, monitor on %s, transforms %s",
            "started" if role is None else f"worker {role.index} started",
            os.getpid(),
            ", ".join(f"[{h}]:{p}" for h, p in self.smtp_addresses),
            ", ".join(f"[{h}]:{p}" for h, p in self.monitor_addresses)
            or ("the supervisor's" if role else "off"),
            ("enabled" if self.switch.enabled else "disabled")
            if self.switch.configured else "not configured",
        )

    async def _bind_all(self, hosts: tuple[str, ...], port: int, bind: Any) -> list[Any]:
        """Bind each host; with port 0 the later hosts reuse the first one's port."""
        bound: list[Any] = []
        for host in hosts:
            try:
                bound.append(await bind(host, port))
            except OSError as error:
                if error.errno in _SKIPPABLE_BIND and (len(hosts) > 1):
                    log.warning("cannot listen on [%s]:%d (%s); skipping it", host, port, error)
                    continue
                raise
            if port == 0:
                port = _port_of(bound[-1])
        if not bound:
            raise OSError(f"no address could be bound among {', '.join(hosts)}")
        return bound

    async def _start_smtp(self, handler: Handler) -> None:
        assert self.hub is not None and self._loop is not None
        hub, limit = self.hub, self.settings.max_connections
        reuse_port = None
        if self.role is not None:
            # each worker takes its share of the configured total
            limit, reuse_port = -(-limit // self.role.count), True

        def factory() -> asyncio.Protocol:
            hub.counters.historic_connections += 1
            if hub.stopping or len(hub.sessions) >= limit:
                return refuse_busy(hub)
            return BuzonSMTP(handler, hub)

        async def bind(host: str, port: int) -> asyncio.AbstractServer:
            return await self._loop.create_server(  # type: ignore[union-attr]
                factory, host, port, reuse_address=True, reuse_port=reuse_port, backlog=4096
            )

        self._servers = await self._bind_all(
            self.settings.smtp_hosts, self.settings.smtp_port, bind
        )
        self.smtp_addresses = [
            sock.getsockname()[:2] for srv in self._servers for sock in srv.sockets
        ]

    # -- run / stop ----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the server to shut down; safe from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Start, call ``ready`` (if given), wait for a stop request, shut down."""
        await self.startup()
        try:
            if ready is not None:
                ready()
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        hub = self.hub
        if hub is not None:
            hub.stopping = True
        for srv in self._servers:
            srv.close()
        if hub is not None:
            for session in list(hub.sessions):
                if not session.in_transaction:
                    session.say_and_close(replies.SHUTTING_DOWN.format(hub.limits.hostname))
            deadline = asyncio.get_running_loop().time() + self.settings.shutdown_grace
            while hub.sessions and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            if hub.sessions:
                log.warning("shutdown grace over: aborting %d session(s)", len(hub.sessions))
                for session in list(hub.sessions):
                    if session.transport is not None:
                        session.transport.abort()
                await asyncio.sleep(0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.committer is not None:
            await self.committer.stop()
        if self.worker is not None:
            await self.worker.stop()
        for transport in self._monitor:
            transport.close()
        if self.keeper is not None and self.keeper.switch is not None:
            await self.keeper.final_save()
        if hub is not None:
            hub.access.close()
        if self.shared is not None:
            self.shared.close()
        log.info("buzon stopped, pid %d", os.getpid())

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until SIGTERM or SIGINT; the process entry point."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            await self.serve(ready)

        with asyncio.Runner(loop_factory=loop_factory(self.settings.event_loop)) as runner:
            runner.run(main())
        return 0


def build_configured_transform(settings: ServerSettings, spool_root: Path) -> Any:
    """The transform chain the settings ask for, or None.

    Raises:
        ConfigError: naming the setting, when it cannot be parsed.
    """
    s = settings
    if not (s.transform or s.transform_sidecars):
        return None
    from buzon.transform.runner import build_transforms

    try:
        return build_transforms(
            s.transform,
            s.transform_sidecars,
            spool_root=spool_root,
            timeout=s.transform_timeout,
            max_output=s.max_message_size * 2,
            fsync=s.fsync,
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


def _port_of(bound: Any) -> int:
    sockets = getattr(bound, "sockets", None)  # a server (uvloop's is no AbstractServer)
    if sockets:
        return int(sockets[0].getsockname()[1])
    sock = bound.get_extra_info("socket")
    assert isinstance(sock, socket.socket)
    return int(sock.getsockname()[1])
