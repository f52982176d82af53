"""The shared counters file: slots written by workers, totals read by the supervisor."""

from __future__ import annotations

from pathlib import Path

import pytest

from buzon.metrics.counters import PERSISTED, Counters
from buzon.metrics.shared import FIELDS, SharedCounters, Totals


def test_each_worker_slot_is_its_own_and_the_totals_add_them_to_the_supervisors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "workers.counters"
    supervisor = SharedCounters(path, 3, create=True)
    worker = SharedCounters(path, 3, create=False)  # another mapping, as in another process
    try:
        own = Counters(mails_sent=100, monitor_requests=7)  # restored from state.json
        totals = Totals(own, supervisor)
        worker.slot(0).mails_sent += 2
        worker.slot(2).mails_sent += 5
        worker.slot(1).bytes_transferred = 1 << 40  # 64-bit, not the wire's 32
        assert totals.mails_sent == 107
        assert totals.bytes_transferred == 1 << 40
        assert [supervisor.slot(i).mails_sent for i in range(3)] == [2, 0, 5]

        totals.monitor_requests += 1  # the monitor counts into the supervisor's own
        assert own.monitor_requests == 8 and totals.monitor_requests == 8
        assert totals.snapshot() == {name: getattr(totals, name) for name in PERSISTED}
        assert "concurrent_connections" not in totals.snapshot()
    finally:
        worker.close()
        supervisor.close()


def test_a_dead_workers_connections_are_zeroed_but_its_counts_stay(tmp_path: Path) -> None:
    shared = SharedCounters(tmp_path / "c", 2, create=True)
    try:
        slot = shared.slot(1)
        slot.concurrent_connections = 40
        slot.historic_connections = 41
        shared.worker_died(1)
        assert (slot.concurrent_connections, slot.historic_connections) == (0, 41)
    finally:
        shared.close()


def test_the_switch_travels_through_the_header(tmp_path: Path) -> None:
    path = tmp_path / "c"
    supervisor = SharedCounters(path, 1, create=True)
    worker = SharedCounters(path, 1, create=False)
    try:
        assert worker.transform_enabled is False
        supervisor.transform_enabled = True
        assert worker.transform_enabled is True
        worker.slot(0).transform_ok += 1  # slots do not overlap the header
        assert supervisor.transform_enabled is True
    finally:
        worker.close()
        supervisor.close()


def test_a_file_for_another_worker_count_or_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c"
    SharedCounters(path, 2, create=True).close()
    with pytest.raises(ValueError, match="does not hold 3 counter slots"):
        SharedCounters(path, 3, create=False)
    path.write_bytes(b"\0" * len(path.read_bytes()))
    with pytest.raises(ValueError, match="not a Buzón counters file"):
        SharedCounters(path, 2, create=False)


def test_slots_are_bounded_and_know_only_counter_names(tmp_path: Path) -> None:
    shared = SharedCounters(tmp_path / "c", 2, create=True)
    try:
        with pytest.raises(IndexError):
            shared.slot(2)
        with pytest.raises(AttributeError):
            shared.slot(0).no_such_counter  # noqa: B018
        assert set(FIELDS) == set(Counters.__dataclass_fields__)
    finally:
        shared.close()
