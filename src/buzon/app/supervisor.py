"""The supervisor of ``BUZON_WORKERS`` SMTP worker processes.

Theory of operation
-------------------
One Python process serves SMTP on one core and can hold only as many sessions
as its file-descriptor limit (``RLIMIT_NOFILE``) allows. With ``workers`` > 1
the ``buzon`` command becomes a supervisor, in the manner of Postfix's master
or uvicorn's ``--workers``:

* it reserves the SMTP port (:mod:`buzon.net`) and starts the
  workers (:mod:`buzon.app.worker`), each a whole SMTP server with its own
  event loop, spool shard (:mod:`buzon.spool.shards`) and delivery threads,
  binding the port with ``SO_REUSEPORT`` so the kernel spreads connections
  evenly over them;
* it owns what must be single: the UDP monitor, the state file and the
  transform switch; the counters of all processes meet in a shared mapped file
  (:mod:`buzon.metrics.shared`), so the monitor's answers are exact at once;
* a worker that dies is started again after a back-off (1 s, doubling to 30 s,
  reset once it has served a minute); what it had queued is in its spool
  shard, which the new worker recovers and delivers, so a crash loses no mail
  answered 250. The connections it held are lost, as with any crashed server,
  and the clients retry;
* SIGTERM/SIGINT is passed to every worker, which shuts down as the
  single-process server does (idle sessions get 421, transactions get
  ``shutdown_grace``); then the monitor closes and the state is saved.

Start-up fails as a whole (exit status 1) if any worker fails to start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from buzon.app.server import OBSERVATIONS_FILE
from buzon.app.tls import prepare_tls
from buzon.app.wiring import (
    build_recipients,
    build_transform,
    check_mail_layout,
    hold_instance,
    loop_factory,
    open_http,
    open_monitor,
    restore_state,
)
from buzon.config import ServerSettings
from buzon.delivery.timing import stage_labels
from buzon.metrics import Counters
from buzon.metrics.histograms import Observations
from buzon.metrics.keeper import StateKeeper
from buzon.metrics.shared import SharedCounters, Totals
from buzon.net import format_address, reserve
from buzon.observe import HttpListener, queue_problem
from buzon.spool import shard_root
from buzon.transform.switch import TransformSwitch

__all__ = ["Supervisor"]

log = logging.getLogger("buzon.supervisor")

_START_TIMEOUT = 60.0  # seconds a worker may take to recover its spool and listen
_BACKOFF_FIRST, _BACKOFF_MAX, _STABLE = 1.0, 30.0, 60.0
_STOP_MARGIN = 15.0  # beyond shutdown_grace, for the worker's own spool and delivery stop


class WorkerFailed(OSError):
    """A worker exited before it was ready to serve."""


class Supervisor:
    """Runs ``settings.workers`` SMTP workers, the monitor and the state file."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.own = Counters()
        self.shared: SharedCounters | None = None
        self.observations: Observations | None = None
        self.counters: Totals | None = None
        self.keeper: StateKeeper | None = None
        self.switch: TransformSwitch | None = None
        self.smtp_port = 0
        self.smtps_port = 0  # implicit TLS, reserved like the SMTP port
        self.smtp_addresses: list[tuple[str, int]] = []
        self.monitor_addresses: list[tuple[str, int]] = []
        self.http: HttpListener | None = None
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._reserved: list[socket.socket] = []
        self._monitor: list[asyncio.BaseTransport] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._instance_lock: int | None = None  # BUZON_INSTANCE's lock file (wiring)

    # -- start -------------------------------------------------------------------------
    async def startup(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        s.instance_dir.mkdir(parents=True, exist_ok=True)  # BUZON_INSTANCE: this replica's
        s.mail_dir.mkdir(parents=True, exist_ok=True)
        self._instance_lock = hold_instance(s)
        # Checked here once, before any worker; each worker builds its own directory too.
        check_mail_layout(s)
        build_recipients(s)
        # Validated here so a bad transform stops start-up once, with its setting named.
        transform = build_transform(s, s.data_dir / "spool")
        configured = transform is not None
        self.shared = SharedCounters(s.instance_dir / "workers.counters", s.workers, create=True)
        self.counters = Totals(self.own, self.shared)
        self.observations = Observations.shared(
            s.instance_dir / OBSERVATIONS_FILE, s.workers, stage_labels(transform), create=True)
        self.keeper = StateKeeper(s.instance_dir / "state.json", self.counters, fsync=s.fsync)
        keeper, shared = self.keeper, self.shared

        def switch_changed(enabled: bool) -> None:
            keeper.switch_changed(enabled)  # saved first: a failed save rolls it back
            shared.transform_enabled = enabled

        self.switch = restore_state(
            keeper, s, configured=configured, into=self.own, on_change=switch_changed
        )
        shared.transform_enabled = self.switch.enabled

        self.smtp_port, self._reserved = reserve(s.smtp_hosts, s.smtp_port)
        self.smtp_addresses = [sock.getsockname()[:2] for sock in self._reserved]
        # Generated (and checked) once here, before any worker: workers only load it.
        if await asyncio.to_thread(prepare_tls, s, generate=True) is not None and s.tls_hosts:
            self.smtps_port, held = reserve(s.tls_hosts, s.smtps_port)
            self._reserved.extend(held)
        started = await asyncio.gather(
            *(self._spawn(i) for i in range(s.workers)), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            live = [p for p in self.procs.values() if p.returncode is None]
            log.error(
                "%s; stopping the other workers (pids %s)",
                failed[0], ", ".join(str(p.pid) for p in live) or "none",
            )
            for proc in live:
                proc.kill()  # nothing was announced yet; what they queued stays queued
            await asyncio.gather(*(p.wait() for p in self.procs.values()))
            raise failed[0]
        for i in range(s.workers):
            self._tasks.append(asyncio.create_task(self._watch(i), name=f"watch-worker-{i}"))
        self.monitor_addresses, self._monitor = await open_monitor(s, self.counters, self.switch)
        self.http = await open_http(s, self.counters, self.switch, self._not_ready,
                                    self.observations)
        self._tasks.append(asyncio.create_task(self.keeper.snapshots(), name="metrics-snapshot"))
        log.info(
            "buzon started, supervisor pid %d, %d workers (pids %s), SMTP on %s, monitor on %s, "
            "HTTP on %s",
            os.getpid(),
            s.workers,
            ", ".join(str(p.pid) for p in self.procs.values()),
            ", ".join(format_address(h, p) for h, p in self.smtp_addresses),
            ", ".join(format_address(h, p) for h, p in self.monitor_addresses),
            ", ".join(format_address(h, p) for h, p in self.http.addresses) if self.http else "off",
        )

    def _not_ready(self) -> str | None:
        """``/readyz``: every worker runs and every spool shard can take a message."""
        if self._stopping:
            return "shutting down"
        for index, proc in sorted(self.procs.items()):
            if proc.returncode is not None:
                return f"worker {index} is not running (exit status {proc.returncode})"
        spool = self.settings.instance_dir / "spool"
        shards = [shard_root(spool, i) for i in range(self.settings.workers)]
        dirs = [d for root in shards for d in (root / "incoming", root / "queue")]
        return queue_problem(dirs, self.settings.max_message_size)

    async def _spawn(self, index: int) -> None:
        """Start worker ``index`` and wait until it listens."""
        assert self.shared is not None
        settings = self.settings.model_dump(mode="json", exclude={"monitor_token"})
        settings["smtp_port"] = self.smtp_port
        settings["smtps_port"] = self.smtps_port or self.settings.smtps_port
        read_fd, write_fd = os.pipe()
        order = {
            "settings": settings,
            "index": index,
            "count": self.settings.workers,
            "counters": str(self.shared.path),
            "ready_fd": write_fd,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "buzon.app.worker",
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self.procs[index] = proc
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(order).encode() + b"\n")  # the pipe stays open: see worker
        try:
            line = await asyncio.wait_for(_read_line(read_fd), _START_TIMEOUT)
        finally:
            os.close(read_fd)
        if line != b"ready\n":
            await proc.wait()
            raise WorkerFailed(f"worker {index} exited with status {proc.returncode} at start")

    async def _watch(self, index: int) -> None:
        """Restart worker ``index`` whenever it dies, until the supervisor stops."""
        assert self.shared is not None
        backoff = _BACKOFF_FIRST
        while True:
            proc = self.procs[index]
            since = time.monotonic()
            status = await proc.wait()
            if self._stopping:
                return
            self.shared.worker_died(index)
            if self.observations is not None:
                self.observations.worker_died(index)
            if time.monotonic() - since > _STABLE:
                backoff = _BACKOFF_FIRST
            log.error(
                "worker %d (pid %d) exited with status %s; starting it again in %.0f s",
                index, proc.pid, status, backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            if self._stopping:
                return
            try:
                await self._spawn(index)
            except OSError as error:  # TimeoutError is an OSError
                log.error("worker %d did not start again: %s", index, error)
                # _spawn left the failed process in procs: the loop waits for it and retries

    # -- run / stop ----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask for a shutdown; safe from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self) -> None:
        await self.startup()
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self._stopping = True
        live = [p for p in self.procs.values() if p.returncode is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = self.settings.shutdown_grace + _STOP_MARGIN
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), deadline)
        except TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    log.error("worker pid %d did not stop in %.0f s; killing it", proc.pid, deadline)
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in live))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._monitor:
            transport.close()
        if self.http is not None:
            await self.http.close()
        if self.keeper is not None and self.keeper.switch is not None:
            await self.keeper.final_save()
        for sock in self._reserved:
            sock.close()
        if self.shared is not None:
            self.shared.close()
        if self.observations is not None:
            self.observations.close()
        if self._instance_lock is not None:
            os.close(self._instance_lock)
        log.info("buzon stopped, supervisor pid %d", os.getpid())

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; the process entry point."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            await self.serve()

        with asyncio.Runner(loop_factory=loop_factory(self.settings.event_loop)) as runner:
            runner.run(main())
        return 0


async def _read_line(fd: int) -> bytes:
    """What a worker writes on its readiness pipe, up to its end (b"" if it died first)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    got = bytearray()

    def readable() -> None:
        chunk = os.read(fd, 64)
        got.extend(chunk)
        if (not chunk or got.endswith(b"\n")) and not done.done():
            done.set_result(bytes(got))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
