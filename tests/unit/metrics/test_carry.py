"""A replica's mapped counters: what a killed process counted is carried to its successor."""

from __future__ import annotations

from pathlib import Path

from buzon.metrics.carry import open_carried
from buzon.metrics.counters import PERSISTED, Counters


def test_a_fresh_replica_starts_from_the_state_file(tmp_path: Path) -> None:
    shared, slot = open_carried(tmp_path / "counters", Counters(mails_sent=7, deliveries=6))
    try:
        assert (slot.mails_sent, slot.deliveries, slot.historic_connections) == (7, 6, 0)
        assert slot.snapshot() == Counters(mails_sent=7, deliveries=6).snapshot()
    finally:
        shared.close()


def test_counts_made_after_the_last_snapshot_survive_the_process(tmp_path: Path) -> None:
    path = tmp_path / "counters"
    shared, slot = open_carried(path, Counters(mails_sent=10))
    slot.mails_sent += 5          # counted, then the process is killed before its snapshot:
    slot.concurrent_connections = 4
    slot.queue_depth = 9
    shared.close()                # (the mapping's stores are in the file either way)
    state = Counters(mails_sent=10, monitor_requests=3)  # the last snapshot saved
    shared, slot = open_carried(path, state)
    try:
        assert slot.mails_sent == 15                  # the mapping is newer
        assert slot.monitor_requests == 3             # the state file is (counted elsewhere)
        assert (slot.concurrent_connections, slot.queue_depth) == (0, 0)  # gauges restart
    finally:
        shared.close()


def test_after_a_machine_crash_the_state_file_wins_where_it_is_ahead(tmp_path: Path) -> None:
    path = tmp_path / "counters"
    shared, slot = open_carried(path, Counters())
    slot.mails_sent = 2  # an old page that made it to disk
    shared.close()
    shared, slot = open_carried(path, Counters(mails_sent=40))
    try:
        assert slot.mails_sent == 40
    finally:
        shared.close()


def test_a_file_that_is_not_a_counters_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "counters"
    path.write_bytes(b"not a counters file")
    shared, slot = open_carried(path, Counters(bytes_transferred=1 << 40))
    try:
        assert slot.bytes_transferred == 1 << 40
        assert set(slot.snapshot()) == set(PERSISTED)
    finally:
        shared.close()
