"""Settings: environment, flags over environment, and one clear line per bad variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from buzon import __version__
from buzon.config import load_server_settings


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("BUZON_"):
            monkeypatch.delenv(name)
    s = load_server_settings([])
    assert (s.smtp_port, s.monitor_port, s.max_message_size) == (2525, 2626, 10_240_000)
    assert s.smtp_hosts == ("0.0.0.0", "::")
    assert s.mail_dir == s.data_dir / "mail"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUZON_SMTP_PORT", "2000")
    monkeypatch.setenv("BUZON_MONITOR_PORT", "2001")
    monkeypatch.setenv("BUZON_TRANSFORM", "cat")
    s = load_server_settings(["-p", "3000", "-T", "tac"])
    assert (s.smtp_port, s.monitor_port, s.transform) == (3000, 2001, "tac")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BUZON_SMTP_PORT": "70000"}, "BUZON_SMTP_PORT: Input should be less than or equal to 65535"),
        ({"BUZON_MAX_RECIPIENTS": "zero"}, "BUZON_MAX_RECIPIENTS: Input should be a valid integer"),
        ({"BUZON_TRANSFORM_FAILURE_POLICY": "drop"}, "BUZON_TRANSFORM_FAILURE_POLICY: String should match"),
        ({"BUZON_MONITOR_TOKEN": "short"}, "BUZON_MONITOR_TOKEN: Value error, must be exactly 8"),
        ({"BUZON_MONITOR_TOKEN": "secretpa"}, "BUZON_MONITOR_TOKEN: Value error, is a well-known"),
    ],
)
def test_bad_variables_exit_2_naming_the_variable(env: dict[str, str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "buzon"], env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("buzon: configuration error: " + message), proc.stderr
    for value in env.values():  # the bad value, possibly a secret, is never echoed
        assert value not in proc.stderr.replace(message, "")


def test_bad_flag_value_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_server_settings(["-u", "tooshort"[:5]])
    assert info.value.code == 2
    assert "BUZON_MONITOR_TOKEN: Value error" in capsys.readouterr().err


def test_version_and_help_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "buzon", "-v"], capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, f"buzon {__version__}")
    out = subprocess.run([sys.executable, "-m", "buzon", "-h"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("-p", "-P", "-u", "-T", "-v"):
        assert f"  {flag}" in out.stdout
