"""BatchThread: batches what piles up, one result per item, errors stay per item."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import pytest

from buzon.batching import BatchThread


class Held:
    """A batch function that signals when a batch starts and runs it only once released."""

    def __init__(self, result: Callable[[int], int | BaseException] = lambda i: i) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.batches: list[list[int]] = []
        self._result = result

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.started.set()
        assert self.gate.wait(10), "the test never released the batch"
        self.batches.append(list(items))
        return [self._result(i) for i in items]

    async def running(self) -> None:
        """Wait, without blocking the loop, until the thread is inside a batch."""
        assert await asyncio.to_thread(self.started.wait, 10), "no batch started"


def test_items_submitted_while_busy_form_one_batch() -> None:
    held = Held(lambda i: i * 10 if i != 3 else ValueError("three"))

    async def main() -> list[object]:
        worker: BatchThread[int, int] = BatchThread("t", held)
        worker.start()
        first = worker.submit(0)
        await held.running()  # the thread now holds [0] and waits on the gate
        rest = [worker.submit(i) for i in range(1, 6)]
        held.gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await worker.stop()
        return results

    results = asyncio.run(main())
    assert held.batches == [[0], [1, 2, 3, 4, 5]]
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"


def test_a_crashing_batch_fails_only_its_items_and_the_thread_goes_on() -> None:
    def run(items: Sequence[int]) -> list[int | BaseException]:
        if 13 in items:
            raise RuntimeError("bug")
        return list(items)

    async def main() -> tuple[BaseException | int, int]:
        worker: BatchThread[int, int] = BatchThread("t", run)
        worker.start()
        bad = await asyncio.gather(worker.submit(13), return_exceptions=True)
        good = await worker.submit(7)
        await worker.stop()
        return bad[0], good

    bad, good = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and good == 7


def test_submit_after_stop_is_refused() -> None:
    async def main() -> None:
        worker: BatchThread[int, int] = BatchThread("t", lambda items: list(items))
        worker.start()
        await worker.stop()
        with pytest.raises(RuntimeError, match="stopped"):
            worker.submit(1)

    asyncio.run(main())


def test_a_batch_holds_at_most_max_batch_items() -> None:
    held = Held()

    async def main() -> list[int]:
        worker: BatchThread[int, int] = BatchThread("t", held, max_batch=2)
        worker.start()
        first = worker.submit(0)
        await held.running()
        rest = [worker.submit(i) for i in range(1, 6)]
        held.gate.set()
        results = await asyncio.gather(first, *rest)
        await worker.stop()
        return results

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, 5]
    assert held.batches == [[0], [1, 2], [3, 4], [5]]


def test_stop_without_drain_cancels_what_waits() -> None:
    held = Held()

    async def main() -> tuple[int, bool, list[list[int]]]:
        worker: BatchThread[int, int] = BatchThread("t", held)
        worker.start()
        first = worker.submit(1)
        await held.running()  # 1 is being run
        waiting = worker.submit(2)
        stopping = asyncio.create_task(worker.stop(drain=False))
        await asyncio.wait({waiting}, timeout=10)  # stop() cancels it before joining
        held.gate.set()
        await stopping
        return await first, waiting.cancelled(), held.batches

    assert asyncio.run(main()) == (1, True, [[1]])
