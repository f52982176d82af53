"""The monitor's decisions, bytes in and bytes out, with no socket (SPEC §6)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buzon.metrics.counters import Counters
from buzon.monitor import handler as handler_module
from buzon.monitor.handler import handle, respond
from buzon.monitor.ratelimit import FailureBudget
from buzon.monitor.wire import (
    AuthFailed,
    BadCommand,
    Command,
    Request,
    Response,
    Status,
    decode_response,
    encode_request,
)

TOKEN = b"Zq7Kp2Lw"
WRONG = b"Zq7Kp2Lx"  # differs in the last byte only
SOURCE = "192.0.2.7"


@dataclass
class FakeSwitch:
    configured: bool = True
    enabled: bool = False
    calls: list[bool] = field(default_factory=list)
    fail: bool = False

    def set_enabled(self, on: bool) -> None:
        if self.fail:
            raise OSError("disk full while persisting the switch")
        self.calls.append(on)
        self.enabled = on


@dataclass
class Monitor:
    """Everything respond() needs, with a hand-driven clock."""

    counters: Counters = field(default_factory=Counters)
    switch: FakeSwitch = field(default_factory=FakeSwitch)
    limiter: FailureBudget = field(
        default_factory=lambda: FailureBudget(3, address_per_minute=2)
    )
    now: float = 1000.0

    def ask(self, datagram: bytes, source: str = SOURCE) -> bytes | None:
        return respond(
            datagram,
            source,
            counters=self.counters,
            token=TOKEN,
            switch=self.switch,
            limiter=self.limiter,
            now=self.now,
        )

    def request(
        self, command: int, *, token: bytes = TOKEN, rid: int = 0x1234, source: str = SOURCE
    ) -> Response | None:
        reply = self.ask(encode_request(Request(rid, token, command)), source)
        return None if reply is None else decode_response(reply)


@pytest.fixture
def monitor() -> Monitor:
    return Monitor(
        counters=Counters(
            historic_connections=11, concurrent_connections=3, bytes_transferred=4096, mails_sent=2
        )
    )


def _handle(monitor: Monitor, command: int, token: bytes = TOKEN) -> Response:
    return handle(
        Request(0x4242, token, command),
        counters=monitor.counters,
        token=TOKEN,
        switch=monitor.switch,
    )


# --------------------------------------------------------------------------- handle()


@pytest.mark.parametrize(
    ("command", "value"),
    [
        (Command.HISTORIC_CONNECTIONS, 11),
        (Command.CONCURRENT_CONNECTIONS, 3),
        (Command.BYTES_TRANSFERRED, 4096),
        (Command.MAILS_SENT, 2),
    ],
)
def test_counter_commands_read_their_counter(
    monitor: Monitor, command: Command, value: int
) -> None:
    assert _handle(monitor, command) == Response.with_u32(0x4242, value)


@pytest.mark.parametrize(
    ("stored", "sent"),
    [(2**32 - 2, 2**32 - 2), (2**32 - 1, 2**32 - 1), (2**32, 2**32 - 1), (2**40 + 5, 2**32 - 1)],
)
@pytest.mark.parametrize("command", list(Command)[:4])
def test_counters_saturate_at_u32_max(
    monitor: Monitor, command: Command, stored: int, sent: int
) -> None:
    for name in (
        "historic_connections",
        "concurrent_connections",
        "bytes_transferred",
        "mails_sent",
    ):
        setattr(monitor.counters, name, stored)
    assert _handle(monitor, command).u32 == sent


@pytest.mark.parametrize("enabled", [True, False])
def test_status_reports_the_switch_without_touching_it(monitor: Monitor, enabled: bool) -> None:
    monitor.switch.enabled = enabled
    assert _handle(monitor, Command.TRANSFORM_STATUS) == Response.with_flag(0x4242, enabled)
    assert monitor.switch.calls == []


def test_enable_turns_transformations_on(monitor: Monitor) -> None:
    assert _handle(monitor, Command.TRANSFORM_ENABLE) == Response.with_flag(0x4242, True)
    assert monitor.switch.calls == [True]


def test_disable_turns_transformations_off(monitor: Monitor) -> None:
    monitor.switch.enabled = True
    assert _handle(monitor, Command.TRANSFORM_DISABLE) == Response.with_flag(0x4242, False)
    assert monitor.switch.calls == [False]


def test_enable_without_a_program_answers_0x05(monitor: Monitor) -> None:
    monitor.switch.configured = False
    assert _handle(monitor, Command.TRANSFORM_ENABLE) == Response(0x4242, Status.NO_TRANSFORM)
    assert monitor.switch.calls == []


def test_disable_without_a_program_is_harmless(monitor: Monitor) -> None:
    monitor.switch.configured = False
    assert _handle(monitor, Command.TRANSFORM_DISABLE) == Response.with_flag(0x4242, False)


def test_wrong_token_is_refused(monitor: Monitor) -> None:
    with pytest.raises(AuthFailed) as caught:
        _handle(monitor, Command.HISTORIC_CONNECTIONS, token=WRONG)
    assert caught.value.request_id == 0x4242


def test_token_is_checked_before_the_command(monitor: Monitor) -> None:
    # A stranger learns nothing about the command space: 0x01, not 0x03.
    with pytest.raises(AuthFailed):
        _handle(monitor, 0x07, token=WRONG)
    with pytest.raises(BadCommand):
        _handle(monitor, 0x07)


def test_token_is_compared_in_constant_time(monitor: Monitor, monkeypatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = handler_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(handler_module.hmac, "compare_digest", spy)
    _handle(monitor, Command.MAILS_SENT)
    assert seen == [(TOKEN, TOKEN)]


# --------------------------------------------------------------------------- respond(): every status


def test_status_0x00_ok(monitor: Monitor) -> None:
    assert monitor.request(Command.HISTORIC_CONNECTIONS) == Response.with_u32(0x1234, 11)


def test_status_0x01_auth_failed(monitor: Monitor) -> None:
    assert monitor.request(Command.HISTORIC_CONNECTIONS, token=WRONG) == Response(
        0x1234, Status.AUTH_FAILED
    )
    assert monitor.counters.monitor_auth_failures == 1


def test_status_0x02_bad_version(monitor: Monitor) -> None:
    datagram = bytearray(encode_request(Request(0x1234, TOKEN, 0)))
    datagram[2] = 0x01
    assert monitor.ask(bytes(datagram)) == bytes.fromhex("FF FE 00 12 34 02") + bytes(8)


def test_status_0x03_bad_command(monitor: Monitor) -> None:
    assert monitor.request(0x07) == Response(0x1234, Status.BAD_COMMAND)
    assert monitor.request(0xFF) == Response(0x1234, Status.BAD_COMMAND)


def test_status_0x04_bad_request(monitor: Monitor) -> None:
    datagram = encode_request(Request(0x1234, TOKEN, 0)) + b"\x00"
    assert monitor.ask(datagram) == bytes.fromhex("FF FE 00 12 34 04") + bytes(8)


def test_status_0x05_no_transform_program(monitor: Monitor) -> None:
    monitor.switch.configured = False
    assert monitor.request(Command.TRANSFORM_ENABLE) == Response(0x1234, Status.NO_TRANSFORM)


def test_status_0x06_unexpected_error_is_answered_and_logged(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.switch.fail = True
    with caplog.at_level(logging.ERROR, logger="buzon.monitor"):
        assert monitor.request(Command.TRANSFORM_DISABLE) == Response(0x1234, Status.UNEXPECTED)
    [record] = caplog.records
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)


def test_a_bug_in_decoding_still_gets_0x06(monitor: Monitor, monkeypatch, caplog) -> None:
    def broken(datagram: bytes) -> Request:
        raise ZeroDivisionError

    monkeypatch.setattr(handler_module, "decode_request", broken)
    with caplog.at_level(logging.ERROR, logger="buzon.monitor"):
        assert monitor.request(Command.MAILS_SENT) == Response(0x1234, Status.UNEXPECTED)
        # ...but never a reply longer than the request, nor one without an id.
        assert monitor.ask(encode_request(Request(1, TOKEN, 0))[:13]) is None
        assert monitor.ask(b"\x00" * 14) is None
    assert len(caplog.records) == 3


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\xff\xfe\x00\x12",
        b"\xff\xfe\x00\x12\x34",
        bytes(14),
        b"\xff\xfe\x00\x12\x34" + bytes(8),
    ],
)
def test_no_reply_cases(monitor: Monitor, datagram: bytes) -> None:
    assert monitor.ask(datagram) is None
    assert monitor.counters.monitor_requests == 1


def test_monitor_requests_count_every_datagram(monitor: Monitor) -> None:
    monitor.ask(b"junk")
    monitor.request(Command.MAILS_SENT)
    monitor.request(Command.MAILS_SENT, token=WRONG)
    monitor.request(0x09)
    assert (monitor.counters.monitor_requests, monitor.counters.monitor_auth_failures) == (4, 1)


@settings(database=None, max_examples=300)
@given(
    st.binary(max_size=40) | st.binary(min_size=14, max_size=14).map(lambda b: b"\xff\xfe" + b[2:])
)
def test_a_reply_is_never_longer_than_its_request(datagram: bytes) -> None:
    reply = Monitor().ask(datagram)
    assert reply is None or len(reply) == 14 <= len(datagram)


# --------------------------------------------------------------------------- respond(): rate limit

STRANGER = "198.51.100.9"


def _spend_global(monitor: Monitor, source: str = STRANGER) -> None:
    for _ in range(3):
        assert monitor.request(0, token=WRONG, source=source).status is Status.AUTH_FAILED


def test_a_spent_budget_silences_strangers_without_comparing(monitor: Monitor) -> None:
    _spend_global(monitor)
    # No reply, to a wrong token or a right one: answering only the right one would
    # make the silence itself the answer to a guess.
    assert monitor.request(0, token=WRONG, source=STRANGER) is None
    assert monitor.request(0, source=STRANGER) is None
    assert monitor.request(0, source="2001:db8::1") is None
    assert monitor.counters.monitor_auth_failures == 3
    assert monitor.counters.monitor_requests == 6


def test_malformed_requests_are_still_answered_when_the_budget_is_spent(
    monitor: Monitor,
) -> None:
    _spend_global(monitor)
    bad_length = encode_request(Request(1, TOKEN, 0)) + b"x"
    assert monitor.ask(bad_length, STRANGER) == bytes.fromhex("FF FE 00 00 01 04") + bytes(8)


def test_spent_budget_skips_the_token_comparison(monitor: Monitor, monkeypatch) -> None:
    _spend_global(monitor)
    calls: list[object] = []
    monkeypatch.setattr(handler_module.hmac, "compare_digest", lambda a, b: calls.append(a))
    monitor.request(0, source=STRANGER)
    assert calls == []


def test_the_budget_is_global_not_per_address(monitor: Monitor) -> None:
    for i in range(3):
        monitor.request(0, token=WRONG, source=f"198.51.100.{i}")
    assert monitor.request(0, token=WRONG, source="198.51.100.200") is None


def test_a_proven_operator_is_answered_through_a_flood_from_elsewhere(monitor: Monitor) -> None:
    assert monitor.request(0, source=SOURCE) == Response.with_u32(0x1234, 11)
    for i in range(100):
        monitor.request(0, token=WRONG, source=f"198.51.100.{i}")
    assert monitor.request(0, source=SOURCE) == Response.with_u32(0x1234, 11)
    assert monitor.counters.monitor_auth_failures == 3


def test_forged_failures_from_the_operator_do_not_block_it(monitor: Monitor) -> None:
    monitor.request(0, source=SOURCE)  # the operator, proven
    # Forged wrong tokens from its address: 2 of its own, then 3 of the global budget.
    for _ in range(5):
        assert monitor.request(0, token=WRONG, source=SOURCE).status is Status.AUTH_FAILED
    assert monitor.request(0, token=WRONG, source=SOURCE) is None
    # Nothing is held against the address: the first refill serves it again.
    monitor.now += 20.0  # the global budget: 3 a minute
    assert monitor.request(0, source=SOURCE) == Response.with_u32(0x1234, 11)


def test_the_budget_releases_as_it_refills(monitor: Monitor) -> None:
    _spend_global(monitor)
    monitor.now += 19.9  # 3 per minute: one failure's worth every 20 s
    assert monitor.request(0, source=STRANGER) is None
    monitor.now += 0.2
    assert monitor.request(0, source=STRANGER) == Response.with_u32(0x1234, 11)


def test_successes_do_not_spend_the_budget(monitor: Monitor) -> None:
    for _ in range(50):
        assert monitor.request(0) is not None
    for _ in range(3):
        assert monitor.request(0, token=WRONG, source=STRANGER).status is Status.AUTH_FAILED


def test_a_right_token_with_a_bad_command_proves_the_address(monitor: Monitor) -> None:
    assert monitor.request(0x09, source=SOURCE) == Response(0x1234, Status.BAD_COMMAND)
    _spend_global(monitor)
    assert monitor.request(0, source=SOURCE) == Response.with_u32(0x1234, 11)


def test_spending_the_budget_is_logged_once(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="buzon.monitor"):
        for _ in range(10):
            monitor.request(0, token=WRONG)
    message = (
        f"monitor: failed-authentication budget spent (last from {SOURCE}); only "
        "recently authenticated addresses are answered until it refills"
    )
    assert [r.getMessage() for r in caplog.records] == [message]
