"""Where the monitor token comes from, and the generated token file."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from buzon.config import ServerSettings
from buzon.monitor import token as token_module
from buzon.monitor.token import TokenError, load_or_create_token, read_token_file


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BUZON_"):
            monkeypatch.delenv(name)


def _settings(tmp_path: Path, **kwargs: object) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", **kwargs)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- configured tokens


def test_configured_token_wins(tmp_path: Path) -> None:
    settings = _settings(tmp_path, monitor_token="Zq7Kp2Lw", monitor_token_file=tmp_path / "nope")
    assert load_or_create_token(settings) == b"Zq7Kp2Lw"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("content", [b"Zq7Kp2Lw", b"Zq7Kp2Lw\n", b"Zq7Kp2Lw\r\n"])
def test_token_file_is_read_without_its_line_break(tmp_path: Path, content: bytes) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    assert load_or_create_token(_settings(tmp_path, monitor_token_file=secret)) == b"Zq7Kp2Lw"


def test_spaces_are_token_characters_not_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b" a b c d\n")
    assert read_token_file(secret) == b" a b c d"


def test_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    secret = tmp_path / "missing"
    with pytest.raises(TokenError) as caught:
        load_or_create_token(_settings(tmp_path, monitor_token_file=secret))
    assert (
        str(caught.value) == f"{secret}: cannot read the monitor token: No such file or directory"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"short\n", "must be exactly 8 printable ASCII characters"),
        (b"Zq7Kp2Lw9\n", "must be exactly 8 printable ASCII characters"),
        (b"Zq7Kp2L\xe9\n", "must be exactly 8 printable ASCII characters"),
        (b"Zq7\tp2Lw", "must be exactly 8 printable ASCII characters"),
        (b"changeme\n", "is a well-known default token; choose a secret one"),
        (b"MIPASS23", "is a well-known default token; choose a secret one"),
    ],
)
def test_invalid_or_known_tokens_in_files_are_refused(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    with pytest.raises(TokenError) as caught:
        read_token_file(secret)
    assert str(caught.value) == f"{secret}: the monitor token {reason}"


def test_known_token_in_the_settings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(tmp_path, monitor_token="secretpa")
    assert "secretpa" not in str(caught.value.errors(include_input=False))


def test_known_token_in_the_data_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "monitor.token").write_text("12345678\n")
    with pytest.raises(TokenError, match="well-known"):
        load_or_create_token(_settings(tmp_path))


# --------------------------------------------------------------------------- generated token


def test_first_start_generates_a_private_token(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="buzon.monitor"):
        token = load_or_create_token(_settings(tmp_path))
    path = tmp_path / "data" / "monitor.token"
    assert path.read_bytes() == token + b"\n"
    assert len(token) == 8 and token.decode().isalnum()
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["monitor.token"]  # no temp file left
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert str(path) in messages
    assert token.decode() not in messages


def test_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        load_or_create_token(_settings(tmp_path))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "data" / "monitor.token") == 0o600


def test_the_token_is_generated_once(tmp_path: Path) -> None:
    first = load_or_create_token(_settings(tmp_path))
    path = tmp_path / "data" / "monitor.token"
    inode = path.stat().st_ino
    assert load_or_create_token(_settings(tmp_path)) == first
    assert path.stat().st_ino == inode


def test_tokens_differ_between_data_dirs(tmp_path: Path) -> None:
    tokens = {load_or_create_token(ServerSettings(data_dir=tmp_path / str(i))) for i in range(5)}
    assert len(tokens) == 5


def test_a_well_known_draw_is_drawn_again(tmp_path: Path, monkeypatch) -> None:
    draws = iter("12345678" + "Zq7Kp2Lw")
    monkeypatch.setattr(token_module.secrets, "choice", lambda alphabet: next(draws))
    assert load_or_create_token(_settings(tmp_path)) == b"Zq7Kp2Lw"


def test_a_concurrent_creator_wins_the_race(tmp_path: Path, monkeypatch) -> None:
    real_link = os.link

    def racing_link(src: os.PathLike, dst: os.PathLike) -> None:
        Path(dst).write_text("W1nnerXy\n")  # another server got there first
        real_link(src, dst)

    monkeypatch.setattr(token_module.os, "link", racing_link)
    assert load_or_create_token(_settings(tmp_path)) == b"W1nnerXy"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["monitor.token"]


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(TokenError) as caught:
        load_or_create_token(_settings(tmp_path))
    assert str(caught.value).startswith(
        f"{blocker / 'monitor.token'}: cannot store the monitor token:"
    )


def test_a_token_file_readable_by_others_is_warned_about(tmp_path: Path, caplog) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "monitor.token"
    path.write_text("Zq7Kp2Lw\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="buzon.monitor"):
        assert load_or_create_token(_settings(tmp_path)) == b"Zq7Kp2Lw"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} is readable by other users; run chmod 600 on it"
    ]
