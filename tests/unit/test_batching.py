"""BatchThread: batches what piles up, one result per item, errors stay per item."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from buzon.batching import BatchThread


def test_items_submitted_while_busy_form_one_batch() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def run(items: Sequence[int]) -> list[int | BaseException]:
        gate.wait(5)
        batches.append(list(items))
        return [i * 10 if i != 3 else ValueError("three") for i in items]

    async def main() -> list[object]:
        worker: BatchThread[int, int] = BatchThread("t", run)
        worker.start()
        first = worker.submit(0)
        await asyncio.sleep(0.05)  # the thread now holds [0] and waits on the gate
        rest = [worker.submit(i) for i in range(1, 6)]
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await worker.stop()
        return results

    results = asyncio.run(main())
    assert batches == [[0], [1, 2, 3, 4, 5]]
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


def test_stop_without_drain_cancels_what_waits() -> None:
    gate = threading.Event()

    def run(items: Sequence[int]) -> list[int | BaseException]:
        gate.wait(5)
        return list(items)

    async def main() -> tuple[int, bool]:
        worker: BatchThread[int, int] = BatchThread("t", run)
        worker.start()
        first = worker.submit(1)
        await asyncio.sleep(0.05)  # 1 is being run
        waiting = worker.submit(2)
        stopping = asyncio.create_task(worker.stop(drain=False))
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        return await first, waiting.cancelled()

    assert asyncio.run(main()) == (1, True)
