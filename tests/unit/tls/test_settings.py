"""The TLS settings: defaults, the pair rule, what needs BUZON_TLS on; one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from buzon.config import load_server_settings


def test_defaults_offer_starttls_and_nothing_else() -> None:
    s = load_server_settings([])
    assert s.tls and s.tls_cert_file is None and s.tls_key_file is None
    assert s.tls_hosts == () and not s.require_tls
    assert s.smtps_port == 4650 and s.tls_reload_interval == 1.0


def test_the_implicit_listener_parses_like_the_others() -> None:
    s = load_server_settings([], tls_listen="0.0.0.0, [::1]", smtps_port=465)
    assert s.tls_hosts == ("0.0.0.0", "::1") and s.smtps_port == 465


@pytest.mark.parametrize(("env", "line"), [
    ({"BUZON_TLS_CERT_FILE": "/c.pem"},
     "BUZON_TLS_KEY_FILE: Value error, not set, but BUZON_TLS_CERT_FILE is: set both or neither"),
    ({"BUZON_TLS_KEY_FILE": "/k.pem"},
     "BUZON_TLS_KEY_FILE: Value error, set, but BUZON_TLS_CERT_FILE is not: set both or neither"),
    ({"BUZON_TLS": "false", "BUZON_TLS_LISTEN": "::1"},
     "BUZON_TLS_LISTEN: Value error, an implicit-TLS listener needs BUZON_TLS on"),
    ({"BUZON_TLS": "false", "BUZON_REQUIRE_TLS": "true"},
     "BUZON_REQUIRE_TLS: Value error, requiring STARTTLS needs BUZON_TLS on"),
    ({"BUZON_SMTPS_PORT": "65536"},
     "BUZON_SMTPS_PORT: Input should be less than or equal to 65535"),
    ({"BUZON_TLS_RELOAD_INTERVAL": "0"},
     "BUZON_TLS_RELOAD_INTERVAL: Input should be greater than 0"),
])
def test_a_bad_combination_is_one_line_naming_the_variable(
    env: dict[str, str], line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        load_server_settings([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"buzon: configuration error: {line}\n"


def test_the_pair_together_is_accepted(tmp_path: Path) -> None:
    s = load_server_settings([], tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "k.pem")
    assert s.tls_cert_file == tmp_path / "c.pem"  # loaded (and checked) at start-up, not here
