"""A thread that runs blocking file work in batches, for the event loop.

Theory of operation
-------------------
Queue writes and Maildir deliveries must be flushed to disk, and flushing
blocks. ``asyncio.to_thread`` per message costs two thread hand-offs and, with
a handful of pool threads fighting over the GIL, hundreds of futex calls per
message (measured: 326 per 1 KB message, most of the server's CPU time).

A :class:`BatchThread` instead owns one thread. The loop appends work items;
the thread takes *everything* pending at once, runs one batch function over it
(which can share the costly parts: one directory flush for many files), and
resolves all the futures with a single ``call_soon_threadsafe``. Under load
batches grow by themselves (group commit); when idle a batch is one item and
latency is that of a plain thread call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchThread"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchThread(Generic[T, R]):
    """Runs ``run_batch(items) -> results`` on its own thread; one result per item.

    A result that is a ``BaseException`` instance is raised from that item's
    future; anything else is its value.
    """

    def __init__(
        self, name: str, run_batch: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *, max_batch: int = 256,
    ) -> None:
        self._name = name
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._cv = threading.Condition()
        self._closing = False
        self._waiting = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()

    async def stop(self, *, drain: bool = True) -> None:
        """End the thread after the batch in progress and, if ``drain``, all submitted.

        Items not run are cancelled (their futures say so).
        """
        with self._cv:
            self._closing = True
            dropped = [] if drain else self._items[:]
            if not drain:
                self._items.clear()
            self._cv.notify()
        for _, future in dropped:
            future.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue one item; its future resolves when its batch is done."""
        assert self._loop is not None, "BatchThread not started"
        future: asyncio.Future[R] = self._loop.create_future()
        with self._cv:
            if self._closing:
                raise RuntimeError(f"{self._name} is stopped")
            self._items.append((item, future))
            if self._waiting:  # wake the thread only when it sleeps: fewer futex calls
                self._cv.notify()
        return future

    def _main(self) -> None:
        assert self._loop is not None
        while True:
            with self._cv:
                while not self._items and not self._closing:
                    self._waiting = True
                    self._cv.wait()
                    self._waiting = False
                if not self._items:
                    return
                batch = self._items[: self._max_batch]
                del self._items[: self._max_batch]
            try:
                results = list(self._run_batch([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"{self._name}: {len(results)} results for {len(batch)}")
            except BaseException as error:  # a bug in the batch function fails its items only
                log.exception("%s: batch of %d failed", self._name, len(batch))
                results = [error] * len(batch)
            try:
                self._loop.call_soon_threadsafe(_resolve, [f for _, f in batch], results)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


def _resolve(futures: list[asyncio.Future[R]], results: list[R | BaseException]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
