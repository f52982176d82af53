"""``StateKeeper``: the state file's one writer (counters snapshots and the transform switch).

Used by whichever process owns the monitor: the single-process server, or the
supervisor of several workers. One lock serialises every writer (the switch,
the periodic snapshot, shutdown), so a snapshot that started before an
operator's switch cannot write the old value after it, and two writers never
share the temporary file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from buzon.metrics.persist import save_state

__all__ = ["SNAPSHOT_INTERVAL", "StateKeeper"]

log = logging.getLogger("buzon.metrics")

SNAPSHOT_INTERVAL = 1.0  # seconds: the most counter updates a hard crash can lose


class _Snapshotting(Protocol):
    def snapshot(self) -> dict[str, int]: ...


class _Switch(Protocol):
    @property
    def enabled(self) -> bool: ...


class StateKeeper:
    """Writes ``{"counters": ..., "transform_enabled": ...}`` to ``path`` atomically."""

    def __init__(self, path: Path, counters: _Snapshotting, *, fsync: bool) -> None:
        self.path = path
        self.counters = counters
        self.fsync = fsync
        self.switch: _Switch | None = None
        self._lock = threading.Lock()

    def state(self) -> dict[str, Any]:
        assert self.switch is not None
        return {"counters": self.counters.snapshot(), "transform_enabled": self.switch.enabled}

    def save(self) -> dict[str, Any]:
        """Write the state file; the state is read under the lock, at write time."""
        with self._lock:
            state = self.state()
            save_state(self.path, state, fsync=self.fsync)
            return state

    def switch_changed(self, enabled: bool) -> None:
        """``TransformSwitch.on_change``: an operator's switch is saved before the reply."""
        log.info("transforms %s by the monitor", "enabled" if enabled else "disabled")
        self.save()

    async def snapshots(self, interval: float = SNAPSHOT_INTERVAL) -> None:
        """Save every ``interval`` while something changed; runs until cancelled."""
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(interval)
            if self.state() != last:
                try:
                    last = await asyncio.to_thread(self.save)
                except OSError as error:
                    log.warning("cannot save metrics to %s: %s", self.path, error)

    async def final_save(self) -> None:
        """The save at shutdown; a full or read-only disk is logged, not raised.

        A clean stop must not turn into a crash: the counters since the last
        snapshot are lost, mail is not.
        """
        try:
            await asyncio.to_thread(self.save)
        except OSError as error:
            log.error("cannot save metrics to %s at shutdown: %s", self.path, error)
