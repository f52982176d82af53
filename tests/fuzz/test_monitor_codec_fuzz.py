"""Fuzz target: the monitor's 14-byte UDP codec (``buzon.monitor.wire``).

Every datagram the monitor port receives goes through ``decode_request`` before
anything else; the client runs ``decode_response`` on whatever comes back.
Properties, for arbitrary bytes and for structured near-valid datagrams:

* decoding raises nothing but :class:`MonitorError` subclasses (the response
  side only :class:`BadResponse`);
* whatever decodes re-encodes to the very same bytes (``encode(decode(x)) == x``),
  and every valid value survives ``decode(encode(v)) == v``;
* a rejection that gets a reply never amplifies: the reply is 14 bytes and the
  request that earned it was at least 14 bytes; anything shorter is ``NoReply``.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from buzon.monitor.wire import (
    DATAGRAM_SIZE,
    SIGNATURE,
    BadResponse,
    MonitorError,
    NoReply,
    Reject,
    Request,
    Response,
    Status,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

FUZZ = settings.get_profile("fuzz")
# See test_syntax_fuzz.py: hypothesis' patch writer warns on import.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

# Near-valid datagrams: the signature, a version byte that is usually 0, then noise,
# at lengths around 14, so the checks after the signature are exercised too.
_near_valid = st.builds(
    lambda version, rest, n: (SIGNATURE + bytes([version]) + rest)[:n],
    st.sampled_from([0, 0, 0, 1, 0xFF]),
    st.binary(min_size=0, max_size=20),
    st.integers(min_value=0, max_value=24),
)
DATAGRAMS = st.binary(max_size=64) | _near_valid


@FUZZ
@given(DATAGRAMS)
@example(b"")
@example(SIGNATURE + b"\x00\x12\x34")
@example(SIGNATURE + bytes(12))
@example(SIGNATURE + bytes(13))
def test_decode_request_raises_only_monitor_errors_and_round_trips(datagram: bytes) -> None:
    try:
        request = decode_request(datagram)
    except Reject as reject:
        # Answered: only for datagrams of at least 14 bytes, with a 14-byte reply.
        assert len(datagram) >= DATAGRAM_SIZE
        reply = encode_response(reject.response())
        assert len(reply) == DATAGRAM_SIZE <= len(datagram)
        assert reject.request_id == int.from_bytes(datagram[3:5], "big")
        assert decode_response(reply) == reject.response()
        return
    except NoReply:
        assert len(datagram) < DATAGRAM_SIZE or datagram[:2] != SIGNATURE
        return
    except MonitorError as error:  # pragma: no cover - a new, unclassified error
        raise AssertionError(f"MonitorError neither Reject nor NoReply: {error!r}") from None
    assert isinstance(request, Request)
    assert encode_request(request) == datagram


@FUZZ
@given(DATAGRAMS)
@example(SIGNATURE + b"\x00\x00\x01\x07" + bytes(8))
@example(SIGNATURE + b"\x00\x00\x01\xff" + bytes(8))
def test_decode_response_raises_only_bad_response_and_round_trips(datagram: bytes) -> None:
    try:
        response = decode_response(datagram)
    except BadResponse:
        return
    assert isinstance(response, Response)
    assert encode_response(response) == datagram


@FUZZ
@given(st.integers(0, 0xFFFF), st.binary(min_size=8, max_size=8), st.integers(0, 0xFF))
def test_every_request_round_trips(request_id: int, token: bytes, command: int) -> None:
    request = Request(request_id, token, command)
    datagram = encode_request(request)
    assert len(datagram) == DATAGRAM_SIZE
    assert decode_request(datagram) == request


@FUZZ
@given(st.integers(0, 0xFFFF), st.sampled_from(Status), st.binary(min_size=8, max_size=8))
def test_every_response_round_trips(request_id: int, status: Status, data: bytes) -> None:
    response = Response(request_id, status, data)
    datagram = encode_response(response)
    assert len(datagram) == DATAGRAM_SIZE
    assert decode_response(datagram) == response
