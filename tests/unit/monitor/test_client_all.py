"""``--all-replicas``: which addresses are asked, how answers add up, and when they do not."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from buzon.monitor.client_all import EXIT_MIXED, addresses_of, ask_all

A = (socket.AF_INET, ("10.0.0.1", 2626))
B = (socket.AF_INET, ("10.0.0.2", 2626))
C = (socket.AF_INET6, ("fd00::3", 2626, 0, 0))


def resolver(table: dict[str, list[tuple[int, tuple[Any, ...]]]]) -> Any:
    def resolve(name: str, port: int, type: int) -> list[tuple[Any, ...]]:
        assert type == socket.SOCK_DGRAM and port == 2626
        return [(family, type, 17, "", sockaddr) for family, sockaddr in table[name]]
    return resolve


def test_every_address_of_every_name_once_in_order() -> None:
    resolve = resolver({"tasks.smtp": [A, B, A], "other": [C, B]})
    assert addresses_of("tasks.smtp", 2626, resolve) == [A, B]
    assert addresses_of("tasks.smtp, other", 2626, resolve) == [A, B, C]


def test_counters_are_summed(capsys: pytest.CaptureFixture[str]) -> None:
    values = {A: 1000, B: 998, C: 2}
    status = ask_all([A, B, C], lambda a: (True, values[a], ""), name="mails",
                     label="Mails sent", as_json=False)
    assert status == 0
    assert capsys.readouterr().out.splitlines() == ["Replicas: 3", "Mails sent: 2000"]
    ask_all([A, C], lambda a: (True, values[a], ""), name="mails", label="Mails sent",
            as_json=True)
    assert json.loads(capsys.readouterr().out) == {
        "command": "mails", "status": "ok", "value": 1002,
        "replicas": {"10.0.0.1:2626": 1000, "[fd00::3]:2626": 2}}


def test_switches_that_disagree_are_mixed(capsys: pytest.CaptureFixture[str]) -> None:
    assert ask_all([A, B], lambda a: (True, 1, ""), name="status", label=None,
                   as_json=False) == 0
    assert capsys.readouterr().out.splitlines()[1] == "Transformations: enabled"
    status = ask_all([A, B], lambda a: (True, int(a is A), ""), name="status", label=None,
                     as_json=False)
    assert status == EXIT_MIXED
    assert capsys.readouterr().out.splitlines() == [
        "Replicas: 2", "Transformations: mixed", "  10.0.0.1:2626: enabled",
        "  10.0.0.2:2626: disabled"]


def test_one_failing_replica_fails_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    answers = {A: (True, 5, ""), B: (False, 11, "Auth failed")}
    assert ask_all([A, B], answers.__getitem__, name="mails", label="Mails sent",
                   as_json=False) == 11
    out = capsys.readouterr()
    assert out.out == "" and out.err == "Error: 10.0.0.2:2626: Auth failed\n"
