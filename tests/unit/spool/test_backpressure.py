"""The queue gate: who is stored at once, who waits, who is refused (spool/backpressure.py)."""

from __future__ import annotations

import asyncio

import pytest

from buzon.spool.backpressure import QueueFull, QueueGate


def run(coro):
    return asyncio.run(coro)


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` holds (the gate's hand-offs take a few loop turns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_under_the_mark_a_message_goes_straight_in() -> None:
    async def go() -> None:
        gate = QueueGate(limit=10, delay_at=5)
        for _ in range(5):
            await asyncio.wait_for(gate.admit(), 0.5)
        assert gate.depth == 5

    run(go())


def test_past_the_mark_messages_wait_and_each_delivery_lets_one_in_in_order() -> None:
    async def go() -> None:
        delays = []
        gate = QueueGate(limit=100, delay_at=2, max_delay=60, on_delay=lambda: delays.append(1))
        await gate.admit()
        await gate.admit()
        order: list[int] = []

        async def sender(n: int) -> None:
            await gate.admit()
            order.append(n)

        tasks = [asyncio.create_task(sender(n)) for n in range(3)]
        await until(lambda: gate.waiting == 3)
        assert order == [] and len(delays) == 3
        gate.leave()  # one delivered: exactly one waiter goes in
        await until(lambda: order == [0])
        assert gate.depth == 2 and gate.waiting == 2
        gate.leave()
        await until(lambda: order == [0, 1])
        assert gate.depth == 2  # a reservation each, never more than the room made
        gate.leave()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2] and gate.waiting == 0

    run(go())


def test_at_the_limit_a_message_is_refused_at_once() -> None:
    async def go() -> None:
        gate = QueueGate(limit=3, delay_at=2, max_delay=60)
        gate.add(3)  # recovered at start-up
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(QueueFull):
            await gate.admit()
        assert loop.time() - started < 0.5
        assert gate.depth == 3

    run(go())


def test_a_wait_that_runs_out_stores_under_the_limit_and_refuses_at_it() -> None:
    async def go() -> None:
        gate = QueueGate(limit=3, delay_at=1, max_delay=0.05)
        await gate.admit()
        await gate.admit()  # waited 0.05 s, then in: 2 < 3
        assert gate.depth == 2
        await gate.admit()
        assert gate.depth == 3
        with pytest.raises(QueueFull):
            await gate.admit()
        assert gate.depth == 3 and gate.waiting == 0

    run(go())


def test_a_cancelled_waiter_leaves_no_reservation_and_no_place_in_line() -> None:
    async def go() -> None:
        gate = QueueGate(limit=10, delay_at=1, max_delay=60)
        await gate.admit()
        task = asyncio.create_task(gate.admit())
        await until(lambda: gate.waiting == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.waiting == 0 and gate.depth == 1
        gate.leave()
        assert gate.depth == 0

    run(go())


def test_without_marks_nothing_waits_or_is_refused() -> None:
    async def go() -> None:
        gate = QueueGate(limit=0, delay_at=0)
        for _ in range(1000):
            await gate.admit()
        assert gate.depth == 1000

    run(go())
