"""Sidecar.answer without a socket: authenticate, decode, answer, seal (or not)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from buzon.transform.auth import REQUEST_CONTEXT, new_nonce, reply_context, seal, unseal
from buzon.transform.sidecar_server import Sidecar
from buzon.transform.sidecar_settings import SidecarSettings
from buzon.transform.wire import (
    ErrorReply,
    HealthOk,
    HealthRequest,
    Stamp,
    TransformRequest,
    encode_request,
)

KEY = bytes(range(32))


def _sidecar(root: Path) -> Sidecar:
    return Sidecar(SidecarSettings(root=root, max_skew=30), ["cat"], KEY)


def _line(request: object, nonce: str, ts: int | None = None) -> bytes:
    stamp = Stamp(int(time.time()) if ts is None else ts, nonce)
    return seal(KEY, REQUEST_CONTEXT, encode_request(request, stamp))  # type: ignore[arg-type]


def test_a_sealed_health_request_gets_a_sealed_answer(tmp_path: Path) -> None:
    nonce = new_nonce()
    request, response, answer = asyncio.run(_sidecar(tmp_path).answer(
        _line(HealthRequest(), nonce)))
    assert request == HealthRequest()
    assert response == HealthOk(("cat",), 0, 4, 0)
    unseal(KEY, reply_context(nonce), answer)


def test_an_unsealed_request_gets_an_unsealed_auth_error(tmp_path: Path) -> None:
    request, response, answer = asyncio.run(_sidecar(tmp_path).answer(
        b'{"v":2,"op":"health","ts":1,"nonce":"x"}\n'))
    assert request is None
    assert isinstance(response, ErrorReply) and response.kind == "auth"
    assert b'"mac"' not in answer


def test_replays_and_stale_requests_are_refused_with_a_sealed_auth_error(tmp_path: Path) -> None:
    sidecar, nonce = _sidecar(tmp_path), new_nonce()
    line = _line(HealthRequest(), nonce)
    assert isinstance(asyncio.run(sidecar.answer(line))[1], HealthOk)
    _, response, answer = asyncio.run(sidecar.answer(line))
    assert isinstance(response, ErrorReply) and response.kind == "auth"
    assert "nonce already used" in response.detail
    unseal(KEY, reply_context(nonce), answer)  # the request was ours: the answer is sealed
    old = new_nonce()
    _, response, _ = asyncio.run(sidecar.answer(_line(HealthRequest(), old, ts=1)))
    assert isinstance(response, ErrorReply) and "clocks out of step" in response.detail


def test_names_are_checked_before_any_file_is_touched(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "SEG").write_bytes(b"record")
    _, response, _ = asyncio.run(_sidecar(tmp_path).answer(
        _line(TransformRequest("queue/SEG", "w0/X.out"), new_nonce())))
    assert isinstance(response, ErrorReply) and response.kind == "path"
    assert not (tmp_path / "w0").exists()
