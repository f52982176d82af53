"""The monitor's v1 decisions, bytes in and bytes out, with both clocks passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from buzon.metrics.counters import Counters
from buzon.monitor import handler_v1
from buzon.monitor.handler_v1 import ReplayCache, respond_v1
from buzon.monitor.ratelimit import FailureBudget
from buzon.monitor.wire_v1 import (
    CommandV1,
    RequestV1,
    ResponseV1,
    StatusV1,
    decode_response_v1,
    derive_key,
    encode_request_v1,
)

KEY = derive_key(b"Zq7Kp2Lw")
WRONG = derive_key(b"Zq7Kp2Lx")
WALL = 1764420000.0
SOURCE = "192.0.2.7"


@dataclass
class FakeSwitch:
    configured: bool = True
    enabled: bool = False

    def set_enabled(self, on: bool) -> None:
        self.enabled = on


@dataclass
class Monitor:
    counters: Counters = field(default_factory=lambda: Counters(
        historic_connections=11, bytes_transferred=2**32 + 7, mails_sent=5, deliveries=4,
        queue_depth=1, transform_failed=2, refused_messages=3, concurrent_connections=2,
    ))
    switch: FakeSwitch = field(default_factory=FakeSwitch)
    limiter: FailureBudget = field(default_factory=lambda: FailureBudget(3, address_per_minute=2))
    replay: ReplayCache = field(default_factory=ReplayCache)
    now: float = 1000.0
    wall: float = WALL
    nonce: int = 100

    def ask(self, datagram: bytes, source: str = SOURCE) -> ResponseV1 | None:
        reply = respond_v1(datagram, source, counters=self.counters, key=KEY, switch=self.switch,
                           limiter=self.limiter, replay=self.replay, now=self.now, wall=self.wall)
        return None if reply is None else decode_response_v1(reply, KEY)

    def request(self, command: int, *, key: bytes = KEY, ts: float | None = None,
                nonce: int | None = None, source: str = SOURCE) -> ResponseV1 | None:
        if nonce is None:
            self.nonce += 1
            nonce = self.nonce
        when = int(self.wall if ts is None else ts)
        return self.ask(encode_request_v1(RequestV1(nonce, when, command), key), source)


@pytest.mark.parametrize(
    ("command", "value"),
    [
        (CommandV1.HISTORIC_CONNECTIONS, 11),
        (CommandV1.CONCURRENT_CONNECTIONS, 2),
        (CommandV1.BYTES_TRANSFERRED, 2**32 + 7),  # not saturated: 64 bits
        (CommandV1.MAILS_SENT, 5),
        (CommandV1.QUEUE_DEPTH, 1),
        (CommandV1.DELIVERIES, 4),
        (CommandV1.TRANSFORM_FAILURES, 2),
        (CommandV1.REFUSED_MESSAGES, 3),
        (CommandV1.TRANSFORM_STATUS, 0),
        (CommandV1.TRANSFORM_ENABLE, 1),
        (CommandV1.TRANSFORM_DISABLE, 0),
    ],
)
def test_every_command(command: CommandV1, value: int) -> None:
    monitor = Monitor()
    assert monitor.request(command) == ResponseV1(monitor.nonce, StatusV1.OK, value)


def test_counters_saturate_at_2_64() -> None:
    monitor = Monitor()
    monitor.counters.mails_sent = 2**70
    assert monitor.request(CommandV1.MAILS_SENT).value == 2**64 - 1  # type: ignore[union-attr]


def test_enable_without_a_program_and_unknown_commands() -> None:
    monitor = Monitor(switch=FakeSwitch(configured=False))
    assert monitor.request(CommandV1.TRANSFORM_ENABLE).status is StatusV1.NO_TRANSFORM  # type: ignore[union-attr]
    assert monitor.request(0x0B).status is StatusV1.BAD_COMMAND  # type: ignore[union-attr]
    assert monitor.request(0xFF).status is StatusV1.BAD_COMMAND  # type: ignore[union-attr]


def test_a_wrong_mac_is_answered_01_and_counted_before_the_command() -> None:
    monitor = Monitor()
    reply = monitor.request(0xFF, key=WRONG)
    assert reply == ResponseV1(monitor.nonce, StatusV1.AUTH_FAILED)
    assert monitor.counters.monitor_auth_failures == 1


def test_the_failure_budget_silences_wrong_macs_and_spares_a_proven_address() -> None:
    monitor = Monitor()
    assert monitor.request(0, source="198.51.100.1") is not None  # proves that address
    for _ in range(3):
        assert monitor.request(0, key=WRONG, source="203.0.113.9").status is StatusV1.AUTH_FAILED  # type: ignore[union-attr]
    assert monitor.request(0, key=WRONG, source="203.0.113.9") is None  # spent: silence
    assert monitor.request(0, source="203.0.113.10") is None  # not compared at all
    assert monitor.request(0, source="198.51.100.1").status is StatusV1.OK  # type: ignore[union-attr]
    monitor.now += 20  # one failure refilled (3 a minute)
    assert monitor.request(0, source="203.0.113.10").status is StatusV1.OK  # type: ignore[union-attr]


@pytest.mark.parametrize(("skew", "status"), [(-31, StatusV1.STALE), (-30, StatusV1.OK),
                                              (30, StatusV1.OK), (31, StatusV1.STALE)])
def test_the_timestamp_window(skew: int, status: StatusV1) -> None:
    monitor = Monitor()
    reply = monitor.request(0, ts=WALL + skew)
    assert reply is not None and reply.status is status
    if status is StatusV1.STALE:
        assert reply.value == int(WALL)  # the server's clock, for the client's message


def test_a_replay_inside_the_window_is_refused_and_stale_after_it() -> None:
    monitor = Monitor()
    datagram = encode_request_v1(RequestV1(42, int(WALL), 3), KEY)
    assert monitor.ask(datagram).status is StatusV1.OK  # type: ignore[union-attr]
    assert monitor.ask(datagram).status is StatusV1.REPLAYED  # type: ignore[union-attr]
    monitor.wall += 29
    assert monitor.ask(datagram).status is StatusV1.REPLAYED  # type: ignore[union-attr]
    monitor.wall += 2  # the nonce is forgotten only once the timestamp alone refuses it
    assert monitor.ask(datagram).status is StatusV1.STALE  # type: ignore[union-attr]
    assert monitor.request(0).status is StatusV1.OK  # type: ignore[union-attr]
    assert len(monitor.replay) == 1  # the old nonce was swept out on the way


def test_a_full_cache_refuses_rather_than_forgets() -> None:
    monitor = Monitor(replay=ReplayCache(limit=2))
    assert [monitor.request(0).status for _ in range(3)] == [  # type: ignore[union-attr]
        StatusV1.OK, StatusV1.OK, StatusV1.REPLAYED]
    monitor.wall += 31
    assert monitor.request(0).status is StatusV1.OK  # type: ignore[union-attr]


def test_long_short_and_broken() -> None:
    monitor = Monitor()
    datagram = encode_request_v1(RequestV1(7, int(WALL), 0), KEY)
    assert monitor.ask(datagram + b"x") == ResponseV1(7, StatusV1.BAD_REQUEST)
    assert monitor.ask(datagram[:35]) is None


def test_a_bug_is_answered_06_and_logged(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def boom(*args: object, **kwargs: object) -> ResponseV1:
        raise RuntimeError("bug")

    monkeypatch.setattr(handler_v1, "handle_v1", boom)
    monitor = Monitor()
    assert monitor.request(0) == ResponseV1(monitor.nonce, StatusV1.UNEXPECTED)
    assert "unexpected error" in caplog.text
