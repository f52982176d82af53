"""``Server``: one Buzón process, wired and run: start-up, serving, bounded graceful shutdown.

Theory of operation (uvicorn's ``Server(config)`` order)
--------------------------------------------------------
This is the composition root of one process: the only place that knows every
part. The path of a message reads down the packages it wires together::

    smtp (session, handler) ─▶ spool.Intake ─▶ delivery.DeliveryPipeline
        ─▶ transform (chain) ─▶ delivery.MaildirWriter ─▶ storage.maildir

With ``BUZON_INSTANCE`` (replicas sharing a data directory, docs/scaling.md) the
queue, state file and counters are this instance's own (``settings.instance_dir``),
locked for the life of the process (:func:`~buzon.app.wiring.hold_instance`), and
the counters live in a mapped file that outlives the process (:mod:`buzon.metrics.carry`).

``startup``: restore counters and the transform switch from the state file,
recover the spool (half-written files dropped, queued ones handed to the
delivery pipeline), bind the SMTP listeners (:func:`buzon.net.bind_sockets`) on
the application's own event loop (no aiosmtpd ``Controller``: its self-connect
at start would count as a connection), bind the UDP monitor and the HTTP
listener (``/metrics``, ``/readyz``), start the periodic metrics snapshot.

``shutdown`` (on SIGTERM/SIGINT, whose handlers only set an event):
stop accepting; sessions idle between transactions get ``421`` and are closed;
sessions in a transaction get ``shutdown_grace`` seconds to finish (a DATA in
progress completes and is queued normally); the rest are aborted and counted.
Then the delivery pipeline stops (what it has not delivered stays queued for the
next start), the monitor closes and the counters are saved. Nothing answered
with 250 is ever lost: it is on disk before the 250 is sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buzon.accesslog import AccessLog
from buzon.app.tls import open_smtps, prepare_tls
from buzon.app.memory import release_large_buffers
from buzon.app.wiring import (
    build_recipients,
    build_transform,
    check_mail_layout,
    hold_instance,
    loop_factory,
    message_rules,
    open_http,
    open_monitor,
    restore_state,
)
from buzon.config import ServerSettings
from buzon.delivery import DeliveryPipeline, Rules
from buzon.delivery.junk import JunkRule
from buzon.delivery.timing import stage_labels
from buzon.metrics import Counters
from buzon.metrics.carry import COUNTERS_FILE, open_carried
from buzon.metrics.histograms import Observations
from buzon.metrics.keeper import StateKeeper
from buzon.metrics.shared import SharedCounters
from buzon.net import bind_sockets, format_address
from buzon.observe import HttpListener, queue_problem
from buzon.smtp import replies
from buzon.smtp.handler import Handler
from buzon.smtp.session import BuzonSMTP, Hub, Limits, refuse_busy
from buzon.spool import Intake, QueueGate, Spool, adopt_orphans, shard_root
from buzon.spool.shards import work_root
from buzon.transform.switch import FollowedSwitch, TransformSwitch

__all__ = ["OBSERVATIONS_FILE", "Server", "WorkerRole"]

OBSERVATIONS_FILE = "workers.observations"  # beside the counters file (metrics.histograms)

log = logging.getLogger("buzon.server")


@dataclass(frozen=True)
class WorkerRole:
    """This server is worker ``index`` of ``count`` under a :class:`~buzon.app.supervisor.Supervisor`.

    Then the supervisor owns the monitor, the state file and the transform
    switch; the worker counts into its slot of the shared ``counters`` file,
    follows the switch from there, queues into its own spool shard and binds
    the SMTP port with ``SO_REUSEPORT`` beside its siblings.
    """

    index: int
    count: int
    counters: Path


class Server:
    """A running Buzón: SMTP listeners, monitor, spool intake and delivery pipeline."""

    def __init__(self, settings: ServerSettings, role: WorkerRole | None = None) -> None:
        self.settings = settings
        self.role = role
        self.counters: Any = Counters()
        self.state_path = settings.instance_dir / "state.json"
        self.keeper: StateKeeper | None = None
        self.shared: SharedCounters | None = None
        self.observations: Observations | None = None
        self.smtp_addresses: list[tuple[str, int]] = []
        self.smtps_addresses: list[tuple[str, int]] = []  # implicit TLS (RFC 8314)
        self.monitor_addresses: list[tuple[str, int]] = []
        self.http: HttpListener | None = None
        self._queue_dirs: tuple[Path, ...] = ()
        self._stop = asyncio.Event()
        self._servers: list[Any] = []  # asyncio or uvloop servers
        self._monitor: list[asyncio.BaseTransport] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._instance_lock: int | None = None  # BUZON_INSTANCE's lock file (wiring)
        self.hub: Hub | None = None
        self.delivery: DeliveryPipeline | None = None
        self.intake: Intake | None = None
        self._rules: Any = None  # the handler's MessageRules (its reverse-DNS threads)
        self.switch: TransformSwitch | FollowedSwitch | None = None

    # -- start -------------------------------------------------------------------------
    async def startup(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        s.instance_dir.mkdir(parents=True, exist_ok=True)  # BUZON_INSTANCE: this replica's
        s.mail_dir.mkdir(parents=True, exist_ok=True)
        role = self.role
        if role is None:  # under a supervisor, the supervisor holds it
            self._instance_lock = hold_instance(s)
        check_mail_layout(s)  # before recovery delivers anything into the new layout
        recipients = build_recipients(s, announce=role is None)
        spool_root = s.instance_dir / "spool"
        if role is None or role.index == 0:
            # Shards of workers that no longer exist (BUZON_WORKERS lowered) are
            # moved into the first spool before it is recovered: nothing queued waits forever.
            adopted = await asyncio.to_thread(
                adopt_orphans, spool_root, 1 if role is None else role.count, fsync=s.fsync,
                work_area=s.instance_work,
            )
            if adopted:
                log.info("adopted %d queue file(s) of workers no longer configured", adopted)
        index = 0 if role is None else role.index
        # The work area is apart from the spool: the only data a sidecar shares.
        spool = Spool(shard_root(spool_root, index), fsync=s.fsync,
                      work=work_root(s.instance_work, index),
                      drop_cache=s.delivery_page_cache == "drop")
        self._queue_dirs = (spool.incoming, spool.queue)
        transform = build_transform(s, s.work_area)
        labels = stage_labels(transform)
        if role is None:
            self.observations = Observations.private(labels)
            self.keeper = StateKeeper(self.state_path, self.counters, fsync=s.fsync)
            self.switch = restore_state(
                self.keeper, s, configured=transform is not None, into=self.counters
            )
            if s.instance is not None:
                # A replica is killed and replaced as a matter of course: it counts into
                # a mapping that outlives its process (metrics/carry.py).
                self.shared, self.counters = open_carried(
                    s.instance_dir / COUNTERS_FILE, self.counters)
                self.keeper.counters = self.counters
        else:
            self.shared = SharedCounters(role.counters, role.count, create=False)
            self.counters = self.shared.slot(role.index)
            self.observations = Observations.shared(
                role.counters.with_name(OBSERVATIONS_FILE), role.count, labels, create=False)
            shared = self.shared
            self.switch = FollowedSwitch(
                configured=transform is not None, read=lambda: shared.transform_enabled
            )
        counters = self.counters
        counters.queue_limit = s.queue_limit

        def delayed() -> None:
            counters.queue_delayed += 1

        gate = QueueGate(limit=s.queue_limit, delay_at=s.queue_delay_at,
                         max_delay=s.queue_max_delay, on_delay=delayed)
        self.delivery = DeliveryPipeline(
            spool,
            s.mail_dir,
            hostname=s.hostname,
            counters=self.counters,
            transform=transform,
            switch=self.switch,
            rules=Rules(
                retry_window=s.transform_retry_window,
                failure_policy=s.transform_failure_policy,
                first_backoff=s.retry_backoff,
            ),
            fsync=s.fsync,
            observations=self.observations.slot(0 if role is None else role.index),
            junk_rule=JunkRule(header=s.junk_header, threshold=s.junk_threshold,
                               discard=s.junk_discard_threshold),
            gate=gate,
            maildir_sync=s.delivery_sync,
            drop_cache=s.delivery_page_cache == "drop",
        )
        recovered = await asyncio.to_thread(spool.recover)
        if recovered:
            log.info("recovered %d queued message(s) from a previous run", len(recovered))
        self.delivery.start(recovered)
        await asyncio.to_thread(self.delivery.writer.links)  # the probe, off the event loop

        workers = 1 if role is None else role.count
        # Workers load the certificate set the supervisor made; only the owner generates.
        tls = await asyncio.to_thread(prepare_tls, s, generate=role is None)
        self.hub = Hub(
            Limits(
                hostname=s.hostname,
                max_message_size=s.max_message_size,
                max_recipients=s.max_recipients,
                max_line_length=s.max_line_length,
                idle_timeout=s.idle_timeout,
                data_timeout=s.data_timeout,
                # shared limits: each worker takes its share, as of max_connections
                max_sessions_per_client=-(-s.max_connections_per_client // workers),
                client_limit_exempt=s.client_limit_networks,
                max_messages_per_session=s.max_messages_per_session,
                session_lifetime=s.session_lifetime,
                data_memory_budget=max(-(-s.data_memory_budget // workers), s.max_message_size),
                require_tls=s.require_tls,
            ),
            self.counters,
            AccessLog(s.access_log_file, fmt=s.access_log_format),
            tls=tls,
            recipients=recipients,
        )
        self.intake = Intake(spool, on_stored=self.delivery.submit, gate=gate,
                             file_head=self.delivery.file_head)
        self.intake.start()
        self._rules = message_rules(s)
        await self._start_smtp(Handler(self.intake, self._rules))
        if self.keeper is not None:
            self.monitor_addresses, self._monitor = await open_monitor(
                s, self.counters, self.switch
            )
            self.http = await open_http(s, self.counters, self.switch, self._not_ready,
                                        self.observations)
            self._tasks.append(
                asyncio.create_task(self.keeper.snapshots(), name="metrics-snapshot")
            )
        log.info(
            "buzon %s, pid %d, SMTP on %s, monitor on %s, HTTP on %s, transforms %s",
            "started" if role is None else f"worker {role.index} started",
            os.getpid(),
            ", ".join(format_address(h, p) for h, p in self.smtp_addresses),
            ", ".join(format_address(h, p) for h, p in self.monitor_addresses)
            or ("the supervisor's" if role else "off"),
            ", ".join(format_address(h, p) for h, p in self.http_addresses)
            or ("the supervisor's" if role else "off"),
            ("enabled" if self.switch.enabled else "disabled")
            if self.switch.configured else "not configured",
        )

    @property
    def http_addresses(self) -> list[tuple[str, int]]:
        return [] if self.http is None else self.http.addresses

    def _not_ready(self) -> str | None:
        """``/readyz``: None when the queue can take a message and deliveries run."""
        if self.hub is None or self.hub.stopping:
            return "shutting down"
        return queue_problem(self._queue_dirs, self.settings.max_message_size)

    async def _start_smtp(self, handler: Handler) -> None:
        assert self.hub is not None and self._loop is not None
        hub, limit = self.hub, self.settings.max_connections
        reuse_port = False
        if self.role is not None:
            # each worker takes its share of the configured total
            limit, reuse_port = -(-limit // self.role.count), True

        def factory() -> asyncio.Protocol:
            hub.counters.historic_connections += 1
            if hub.stopping or len(hub.sessions) >= limit:
                return refuse_busy(hub)
            return BuzonSMTP(handler, hub)

        sockets = bind_sockets(
            self.settings.smtp_hosts, self.settings.smtp_port, reuse_port=reuse_port
        )
        try:
            for sock in sockets:
                self._servers.append(
                    await self._loop.create_server(factory, sock=sock, backlog=4096)
                )
        except BaseException:
            for srv in self._servers:
                srv.close()
            for sock in sockets[len(self._servers):]:
                sock.close()
            raise
        self.smtp_addresses = [sock.getsockname()[:2] for sock in sockets]
        if hub.tls is not None and self.settings.tls_hosts:
            servers, self.smtps_addresses = await open_smtps(
                self.settings, factory, hub.tls, reuse_port=reuse_port)
            self._servers.extend(servers)

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
        if self.intake is not None:
            await self.intake.stop()
        if self.delivery is not None:
            await self.delivery.stop()
        for transport in self._monitor:
            transport.close()
        if self.http is not None:
            await self.http.close()
        if self.keeper is not None and self.keeper.switch is not None:
            await self.keeper.final_save()
        if hub is not None:
            hub.access.close()
        if self._rules is not None and self._rules.reverse is not None:
            self._rules.reverse.close()  # its look-up threads; sessions are over
        if self.shared is not None:
            self.shared.close()
        if self.observations is not None:
            self.observations.close()
        if self._instance_lock is not None:
            os.close(self._instance_lock)  # the last thing: everything is saved
        log.info("buzon stopped, pid %d", os.getpid())

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Run until SIGTERM or SIGINT; the process entry point."""
        release_large_buffers()  # a burst of large messages must not raise RSS for good

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            await self.serve(ready)

        with asyncio.Runner(loop_factory=loop_factory(self.settings.event_loop)) as runner:
            runner.run(main())
        return 0
