"""monitor-client pieces that need no socket: argument parsing and output."""

from __future__ import annotations

import json

import pytest

from buzon.monitor import client
from buzon.monitor.wire import Command, Response, Status


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("0", Command.HISTORIC_CONNECTIONS),
        ("05", Command.TRANSFORM_ENABLE),
        ("0x06", Command.TRANSFORM_DISABLE),
        ("historic", Command.HISTORIC_CONNECTIONS),
        ("Concurrent", Command.CONCURRENT_CONNECTIONS),
        ("bytes", Command.BYTES_TRANSFERRED),
        ("mails", Command.MAILS_SENT),
        ("status", Command.TRANSFORM_STATUS),
        ("enable", Command.TRANSFORM_ENABLE),
        ("disable", Command.TRANSFORM_DISABLE),
    ],
)
def test_commands_by_number_or_name(text: str, command: Command) -> None:
    assert client._parse_command(text) is command


@pytest.mark.parametrize("text", ["7", "-1", "255", "", "histor", "0x"])
def test_unknown_commands_are_usage_errors(text: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        client.main(["--v0", "-t", "Zq7Kp2Lw", "--", text])
    assert caught.value.code == client.EXIT_USAGE
    assert "is not a command: use 0-6 or one of historic, concurrent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "response", "stdout"),
    [
        (Command.MAILS_SENT, Response.with_u32(31857, 2), "Identifier: 31857\nMails sent: 2\n"),
        (
            Command.TRANSFORM_STATUS,
            Response.with_flag(7, True),
            "Identifier: 7\nTransformations: enabled\n",
        ),
    ],
)
def test_text_output(command, response, stdout, capsys: pytest.CaptureFixture) -> None:
    assert client._report(command, response, as_json=False) == 0
    assert capsys.readouterr().out == stdout


def test_json_output_of_an_error_status(capsys: pytest.CaptureFixture) -> None:
    code = client._report(Command.HISTORIC_CONNECTIONS, Response(9, Status.AUTH_FAILED), True)
    out, err = capsys.readouterr()
    assert code == 11
    assert json.loads(out) == {
        "identifier": 9,
        "command": "historic",
        "status": "auth_failed",
        "error": "Auth failed",
    }
    assert err == "Error: Auth failed\n"


def test_every_error_status_has_words_and_a_distinct_exit_code() -> None:
    codes = {client.EXIT_STATUS_BASE + int(s) for s in client._ERROR_TEXT}
    assert set(client._ERROR_TEXT) == set(Status) - {Status.OK}
    assert len(codes) == 6
    assert codes.isdisjoint({0, client.EXIT_USAGE, client.EXIT_NO_REPLY, client.EXIT_NETWORK})
