"""The seal on every sidecar line, the replay guard and the key file: no sockets."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from buzon.transform.auth import (
    REQUEST_CONTEXT,
    Replayed,
    ReplayGuard,
    Unauthenticated,
    load_key,
    new_nonce,
    reply_context,
    seal,
    unseal,
)
from buzon.transform.failures import FailureKind
from buzon.transform.keygen import main as keygen
from buzon.transform.wire import HealthRequest, Stamp, decode_request, encode_request

KEY = bytes(range(32))
NONCE = "0123456789abcdef0123456789abcdef"
LINE = b'{"v":2,"op":"health","ts":1764420000,"nonce":"' + NONCE.encode() + b'"}\n'


def test_seal_appends_the_mac_of_the_bytes_before_it() -> None:
    sealed = seal(KEY, REQUEST_CONTEXT, LINE)
    body = LINE[:-2]
    tag = hmac.new(KEY, b"buzon-sidecar-v2 request\n" + body, hashlib.sha256).hexdigest()
    assert sealed == body + b',"mac":"' + tag.encode() + b'"}\n'  # docs/protocol.md, golden
    unseal(KEY, REQUEST_CONTEXT, sealed)
    unseal(KEY, REQUEST_CONTEXT, sealed.rstrip(b"\n"))
    assert decode_request(sealed) == (HealthRequest(), Stamp(1764420000, NONCE))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda line: line.replace(b"health", b"heal_h"),  # any byte of the body
        lambda line: line.replace(b'"ts":1764420000', b'"ts":1764420001'),
        lambda line: line[:-4] + (b"0" if line[-4:-3] != b"0" else b"1") + line[-3:],  # the tag
        lambda line: line[: line.rindex(b',"mac"')] + b"}\n",  # the tag removed: v1-like
        lambda line: line.replace(b'"}\n', b'0"}\n'),  # a longer tag
    ],
)
def test_any_change_breaks_the_seal(tamper) -> None:  # type: ignore[no-untyped-def]
    sealed = seal(KEY, REQUEST_CONTEXT, LINE)
    with pytest.raises(Unauthenticated) as caught:
        unseal(KEY, REQUEST_CONTEXT, tamper(sealed))
    assert caught.value.kind is FailureKind.AUTH


def test_a_seal_is_bound_to_its_key_and_its_context() -> None:
    sealed = seal(KEY, REQUEST_CONTEXT, LINE)
    with pytest.raises(Unauthenticated, match="is the key the same"):
        unseal(bytes(32), REQUEST_CONTEXT, sealed)
    # A request cannot pass for a reply, nor a reply to one request for another's.
    with pytest.raises(Unauthenticated):
        unseal(KEY, reply_context(NONCE), sealed)
    reply = seal(KEY, reply_context(NONCE), b'{"v":2,"status":"ok","size":1,"ms":1.0}\n')
    unseal(KEY, reply_context(NONCE), reply)
    with pytest.raises(Unauthenticated):
        unseal(KEY, reply_context(new_nonce()), reply)


def test_the_replay_guard_admits_a_nonce_once_inside_the_window() -> None:
    guard = ReplayGuard(30)
    guard.check(1000, NONCE, now=1000.0)
    with pytest.raises(Replayed, match="nonce already used"):
        guard.check(1000, NONCE, now=1010.0)
    with pytest.raises(Replayed, match=r"timestamp 969 is 31 s old by the sidecar's clock \(window 30 s\)"):
        guard.check(1000 - 31, new_nonce(), now=1000.0)
    with pytest.raises(Replayed, match=r"31 s ahead"):
        guard.check(1031, new_nonce(), now=1000.0)
    guard.check(1030, new_nonce(), now=1000.0)  # a clock 30 s ahead is still accepted
    with pytest.raises(Replayed, match="32 lower-case hex"):
        guard.check(1000, "NOT-HEX", now=1000.0)


def test_the_replay_guard_forgets_what_its_window_refuses_anyway() -> None:
    guard = ReplayGuard(10)
    for i in range(100):
        guard.check(1000, f"{i:032x}", now=1000.0)
    assert len(guard) == 100
    guard.check(1020, new_nonce(), now=1020.0)
    assert len(guard) == 1
    with pytest.raises(Replayed):  # the forgotten ones are stale by their timestamp
        guard.check(1000, f"{1:032x}", now=1020.0)


def test_load_key_reads_hex_and_names_the_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(KEY.hex() + "\n")
    assert load_key(path) == KEY
    path.write_text("zz" * 32)
    with pytest.raises(ValueError, match="does not hold hex digits"):
        load_key(path)
    path.write_text("ab" * 16)
    with pytest.raises(ValueError, match="has 16 bytes; at least 32"):
        load_key(path)
    with pytest.raises(ValueError, match="cannot read the key file"):
        load_key(tmp_path / "absent")


def test_keygen_writes_a_0440_key_once_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sidecar.key"
    assert keygen([str(path)]) == 0
    key = load_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o440
    assert keygen([str(path)]) == 0  # a second `compose up` keeps it
    assert load_key(path) == key
    assert keygen([str(path), "--force"]) == 0
    assert load_key(path) != key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sidecar.key"]
    path.chmod(0o600)
    path.write_text("not a key")
    assert keygen([str(path)]) == 2
    assert "does not hold hex digits; remove it or pass --force" in capsys.readouterr().err


def test_encoded_requests_seal_and_verify_round_trip() -> None:
    line = seal(KEY, REQUEST_CONTEXT, encode_request(HealthRequest(), Stamp(1, NONCE)))
    unseal(KEY, REQUEST_CONTEXT, line)
    assert decode_request(line)[1] == Stamp(1, NONCE)
