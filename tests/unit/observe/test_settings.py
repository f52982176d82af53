"""BUZON_HTTP_LISTEN / BUZON_HTTP_PORT: loopback by default, empty turns the listener off."""

from __future__ import annotations

import pytest

from buzon.config import load_server_settings


def test_defaults_are_loopback_and_9025(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUZON_HTTP_LISTEN", raising=False)
    monkeypatch.delenv("BUZON_HTTP_PORT", raising=False)
    settings = load_server_settings([])
    assert (settings.http_listen, settings.http_port) == ("127.0.0.1", 9025)


def test_an_empty_list_is_allowed_and_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUZON_HTTP_LISTEN", " ")
    assert load_server_settings([]).http_listen == " "


def test_an_empty_smtp_list_is_still_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        load_server_settings([], smtp_listen="")
    assert stop.value.code == 2
    assert "BUZON_SMTP_LISTEN" in capsys.readouterr().err


def test_a_port_out_of_range_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BUZON_HTTP_PORT", "70000")
    with pytest.raises(SystemExit):
        load_server_settings([])
    assert "BUZON_HTTP_PORT: Input should be less than or equal to 65535" in capsys.readouterr().err
