"""Golden tests of the monitor v1 codec (docs/protocol.md, "Version 1").

One table of (object, bytes) drives both directions; every truncation and
trailing garbage are checked; the MAC is recomputed here from its definition
(PBKDF2 key, HMAC-SHA256 over context and body, first 16 bytes), so the code
and the document cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.monitor.wire import MonitorError
from buzon.monitor.wire_v1 import (
    BadMac,
    BadResponseV1,
    LongRequestV1,
    RequestV1,
    ResponseV1,
    ShortRequestV1,
    StatusV1,
    decode_request_v1,
    decode_response_v1,
    derive_key,
    encode_request_v1,
    encode_response_v1,
    is_v1,
    saturate_u64,
)

H = bytes.fromhex
TOKEN = b"Zq7Kp2Lw"
KEY = derive_key(TOKEN)
NONCE = 0x0123456789ABCDEF
TS = 1764420000  # 0x692AE9A0


def test_the_key_is_pbkdf2_of_the_token() -> None:
    assert KEY == hashlib.pbkdf2_hmac("sha256", TOKEN, b"buzon-monitor-v1", 20_000)
    assert KEY.hex() == "04527fcba72cb17eb8b07fe99026660480cfb612e22e6be90d779aca0b9d349d"


def mac(context: bytes, body: bytes) -> bytes:
    return hmac.new(KEY, context + body, hashlib.sha256).digest()[:16]


def sealed_request(body: bytes) -> bytes:
    return body + mac(b"buzon-monitor-v1 request\n", body)


def sealed_response(body: bytes) -> bytes:
    return body + mac(b"buzon-monitor-v1 response\n", body)


DOC_REQUEST = H(
    "FF FE 01 01 23 45 67 89 AB CD EF 00 00 00 00 69 2A E9 A0 03"
    " C9 AC 31 C5 FA 0F 06 CB 3E D1 6B 51 91 4E BB 4B"
)
DOC_RESPONSE = H(
    "FF FE 01 01 23 45 67 89 AB CD EF 00 00 00 01 00 00 00 00 05"
    " 5B 66 74 31 97 52 AF 07 22 44 96 08 27 1D 85 D8"
)

REQUEST_CASES: list[tuple[RequestV1, bytes]] = [
    (RequestV1(NONCE, TS, 3), DOC_REQUEST),
    *[
        (RequestV1(7, TS, c), sealed_request(H("FF FE 01 00 00 00 00 00 00 00 07 00 00 00 00 69 2A E9 A0") + bytes([c])))
        for c in range(11)
    ],
    (RequestV1(0, 0, 0), sealed_request(H("FF FE 01") + bytes(17))),
    (RequestV1(2**64 - 1, 2**64 - 1, 0xFF), sealed_request(H("FF FE 01") + b"\xff" * 17)),
]

RESPONSE_CASES: list[tuple[ResponseV1, bytes]] = [
    (ResponseV1(NONCE, StatusV1.OK, 2**40 + 5), DOC_RESPONSE),
    (ResponseV1(NONCE, StatusV1.OK, 2**64 - 1),
     sealed_response(H("FF FE 01 01 23 45 67 89 AB CD EF 00") + b"\xff" * 8)),
    (ResponseV1(1, StatusV1.STALE, TS),
     sealed_response(H("FF FE 01 00 00 00 00 00 00 00 01 07 00 00 00 00 69 2A E9 A0"))),
    *[
        (ResponseV1(9, s), sealed_response(H("FF FE 01 00 00 00 00 00 00 00 09") + bytes([s]) + bytes(8)))
        for s in StatusV1
        if s not in (StatusV1.AUTH_FAILED, StatusV1.BAD_REQUEST)
    ],
    # Sent to peers that were not authenticated: not sealed (16 zero bytes).
    (ResponseV1(NONCE, StatusV1.AUTH_FAILED),
     H("FF FE 01 01 23 45 67 89 AB CD EF 01") + bytes(24)),
    (ResponseV1(NONCE, StatusV1.BAD_REQUEST),
     H("FF FE 01 01 23 45 67 89 AB CD EF 04") + bytes(24)),
]


@pytest.mark.parametrize(("request_", "datagram"), REQUEST_CASES)
def test_request_both_directions(request_: RequestV1, datagram: bytes) -> None:
    assert len(datagram) == 36 and is_v1(datagram)
    assert encode_request_v1(request_, KEY) == datagram
    assert decode_request_v1(datagram, KEY) == request_


@pytest.mark.parametrize(("response", "datagram"), RESPONSE_CASES)
def test_response_both_directions(response: ResponseV1, datagram: bytes) -> None:
    assert encode_response_v1(response, KEY) == datagram
    assert decode_response_v1(datagram, KEY) == response


@pytest.mark.parametrize("size", range(36))
def test_every_truncated_request_gets_no_reply(size: int) -> None:
    with pytest.raises(ShortRequestV1, match="shorter than 36 bytes"):
        decode_request_v1(DOC_REQUEST[:size], KEY)
    assert not is_v1(DOC_REQUEST[:size])  # and so the server judges it by v0's rules


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", bytes(100)])
def test_trailing_garbage(extra: bytes) -> None:
    with pytest.raises(LongRequestV1) as caught:
        decode_request_v1(DOC_REQUEST + extra, KEY)
    assert (caught.value.nonce, caught.value.status) == (NONCE, StatusV1.BAD_REQUEST)
    with pytest.raises(BadResponseV1, match=f"Response of {36 + len(extra)} bytes; expected 36"):
        decode_response_v1(DOC_RESPONSE + extra, KEY)


@pytest.mark.parametrize("size", range(36))
def test_every_truncated_response_is_ignored(size: int) -> None:
    with pytest.raises(BadResponseV1, match=f"Response of {size} bytes"):
        decode_response_v1(DOC_RESPONSE[:size], KEY)


@pytest.mark.parametrize("index", range(36))
def test_any_flipped_bit_breaks_the_mac(index: int) -> None:
    broken = bytearray(DOC_REQUEST)
    broken[index] ^= 0x01
    if index < 3:  # signature or version: not a v1 request any more
        assert not is_v1(bytes(broken))
        return
    with pytest.raises(BadMac, match="MAC does not verify") as caught:
        decode_request_v1(bytes(broken), KEY)
    assert caught.value.status == StatusV1.AUTH_FAILED
    broken = bytearray(DOC_RESPONSE)
    broken[index] ^= 0x01
    with pytest.raises(BadResponseV1):
        decode_response_v1(bytes(broken), KEY)


def test_a_wrong_token_does_not_verify() -> None:
    with pytest.raises(BadMac):
        decode_request_v1(DOC_REQUEST, derive_key(b"Zq7Kp2Lx"))
    with pytest.raises(BadResponseV1, match="seal does not verify"):
        decode_response_v1(DOC_RESPONSE, derive_key(b"Zq7Kp2Lx"))


def test_the_token_is_not_on_the_wire() -> None:
    assert TOKEN not in DOC_REQUEST and KEY[:8] not in DOC_REQUEST


def test_an_unsealed_ok_is_refused() -> None:
    forged = DOC_RESPONSE[:20] + bytes(16)
    with pytest.raises(BadResponseV1, match="seal does not verify"):
        decode_response_v1(forged, KEY)
    with pytest.raises(BadResponseV1, match="carries a MAC or a value"):
        decode_response_v1(H("FF FE 01 01 23 45 67 89 AB CD EF 01 00 00 00 00 00 00 00 01") + bytes(16), KEY)


def test_reserved_status_and_wrong_version() -> None:
    with pytest.raises(BadResponseV1, match="reserved status 0x09"):
        decode_response_v1(sealed_response(H("FF FE 01") + bytes(8) + H("09") + bytes(8)), KEY)
    with pytest.raises(BadResponseV1, match="not a v1 monitor response"):
        decode_response_v1(H("FF FE 00") + DOC_RESPONSE[3:], KEY)


def test_v0_datagrams_are_not_v1() -> None:
    assert not is_v1(H("FF FE 00 12 34 56 78 9A BC DE F0 12 34 00"))
    assert not is_v1(H("FF FE 01 12 34 56 78 9A BC DE F0 12 34 00"))  # v0 answers it 02
    assert not is_v1(H("FF FD 01") + bytes(33))


@pytest.mark.parametrize(
    "build",
    [
        lambda: RequestV1(-1, 0, 0), lambda: RequestV1(2**64, 0, 0),
        lambda: RequestV1(0, 2**64, 0), lambda: RequestV1(0, 0, 256),
        lambda: ResponseV1(0, StatusV1.OK, 2**64), lambda: ResponseV1(0, 9),
    ],
)
def test_values_check_their_ranges(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_saturation() -> None:
    assert [saturate_u64(v) for v in (-3, 0, 2**64 - 1, 2**70)] == [0, 0, 2**64 - 1, 2**64 - 1]


@given(st.binary(max_size=80))
def test_decode_raises_only_monitor_errors(data: bytes) -> None:
    for decode in (decode_request_v1, decode_response_v1):
        try:
            decode(data, KEY)
        except MonitorError:
            pass
