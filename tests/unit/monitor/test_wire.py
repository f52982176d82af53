"""Golden tests of the monitor codec (SPEC §6): one table drives both directions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buzon.monitor import wire
from buzon.monitor.wire import (
    AuthFailed,
    BadCommand,
    BadLength,
    BadResponse,
    BadSignature,
    BadVersion,
    Command,
    MonitorError,
    NoReply,
    Reject,
    Request,
    Response,
    ShortDatagram,
    Status,
    TruncatedRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

H = bytes.fromhex
SPEC_TOKEN = H("56 78 9A BC DE F0 12 34")
# SPEC §6's request example without the report's typo (a 15th byte).
SPEC_REQUEST = H("FF FE 00 12 34 56 78 9A BC DE F0 12 34 00")
# SPEC §6's response example, verbatim: 2 historic connections, id 0x1234.
SPEC_RESPONSE = H("FF FE 00 12 34 00 00 00 00 02 00 00 00 00")

REQUEST_CASES: list[tuple[Request, bytes]] = [
    (Request(0x1234, SPEC_TOKEN, Command.HISTORIC_CONNECTIONS), SPEC_REQUEST),
    *[
        (
            Request(0xBEEF, b"s3cr3tPw", command),
            H("FF FE 00 BE EF") + b"s3cr3tPw" + bytes([command]),
        )
        for command in Command
    ],
    (Request(0, b"\x00" * 8, 0), H("FF FE 00 00 00") + bytes(8) + H("00")),
    (Request(0xFFFF, b"\xff" * 8, 0x06), H("FF FE 00 FF FF") + b"\xff" * 8 + H("06")),
    # An unknown command is representable: the handler answers it after the token.
    (Request(7, b"abcdefgh", 0x07), H("FF FE 00 00 07") + b"abcdefgh" + H("07")),
    (Request(7, b"abcdefgh", 0xFF), H("FF FE 00 00 07") + b"abcdefgh" + H("FF")),
]

RESPONSE_CASES: list[tuple[Response, bytes]] = [
    (Response(0x1234, Status.OK, H("00 00 00 02 00 00 00 00")), SPEC_RESPONSE),
    (Response.with_u32(0x1234, 2), SPEC_RESPONSE),
    (Response.with_u32(1, 0xFFFF_FFFF), H("FF FE 00 00 01 00 FF FF FF FF 00 00 00 00")),
    (Response.with_u32(0xFFFF, 0x01020304), H("FF FE 00 FF FF 00 01 02 03 04 00 00 00 00")),
    (Response.with_flag(0x0102, True), H("FF FE 00 01 02 00 01 00 00 00 00 00 00 00")),
    (Response.with_flag(0x0102, False), H("FF FE 00 01 02 00 00 00 00 00 00 00 00 00")),
    *[
        (Response(0xABCD, status), H("FF FE 00 AB CD") + bytes([status]) + bytes(8))
        for status in Status
    ],
]


@pytest.mark.parametrize(("request_", "datagram"), REQUEST_CASES)
def test_request_encodes_to_golden_bytes(request_: Request, datagram: bytes) -> None:
    assert encode_request(request_) == datagram


@pytest.mark.parametrize(("request_", "datagram"), REQUEST_CASES)
def test_request_decodes_from_golden_bytes(request_: Request, datagram: bytes) -> None:
    assert decode_request(datagram) == request_


@pytest.mark.parametrize(("response", "datagram"), RESPONSE_CASES)
def test_response_encodes_to_golden_bytes(response: Response, datagram: bytes) -> None:
    assert encode_response(response) == datagram


@pytest.mark.parametrize(("response", "datagram"), RESPONSE_CASES)
def test_response_decodes_from_golden_bytes(response: Response, datagram: bytes) -> None:
    assert decode_response(datagram) == response


def test_spec_examples_read_as_documented() -> None:
    request = decode_request(SPEC_REQUEST)
    assert (request.request_id, request.token, request.checked_command()) == (
        0x1234,
        SPEC_TOKEN,
        Command.HISTORIC_CONNECTIONS,
    )
    response = decode_response(SPEC_RESPONSE)
    assert (response.request_id, response.status, response.u32) == (0x1234, Status.OK, 2)


def test_layouts_are_fourteen_bytes() -> None:
    assert wire.REQUEST.size == wire.RESPONSE.size == wire.DATAGRAM_SIZE == 14
    assert wire.REQUEST.format == "!2sBH8sB"
    assert wire.RESPONSE.format == "!2sBHB8s"


def test_enums_carry_spec_values() -> None:
    assert [int(c) for c in Command] == list(range(7))
    assert [int(s) for s in Status] == list(range(7))


# --------------------------------------------------------------------------- malformed requests


@pytest.mark.parametrize("length", range(5))
def test_truncation_below_five_bytes_gets_no_reply(length: int) -> None:
    with pytest.raises(ShortDatagram) as caught:
        decode_request(SPEC_REQUEST[:length])
    assert isinstance(caught.value, NoReply)
    assert str(caught.value) == "Datagram too short to carry the signature, version and request id."


@pytest.mark.parametrize("length", range(5, 14))
def test_truncation_of_five_to_thirteen_bytes_gets_no_reply(length: int) -> None:
    # A 14-byte answer would be longer than the request: no amplification (SPEC §6).
    with pytest.raises(TruncatedRequest) as caught:
        decode_request(SPEC_REQUEST[:length])
    assert isinstance(caught.value, NoReply)
    assert caught.value.request_id == 0x1234
    assert caught.value.status is Status.BAD_REQUEST
    assert str(caught.value) == "Request shorter than 14 bytes; a 14-byte reply would amplify it."


@pytest.mark.parametrize("extra", [1, 2, 10, 100, 65507 - 14])
def test_datagrams_of_fifteen_bytes_or_more_are_rejected_0x04(extra: int) -> None:
    with pytest.raises(BadLength) as caught:
        decode_request(SPEC_REQUEST + b"\x00" * extra)
    error = caught.value
    assert isinstance(error, Reject)
    assert str(error) == "Request longer than 14 bytes."
    assert error.status is Status.BAD_REQUEST
    assert encode_response(error.response()) == H("FF FE 00 12 34 04") + bytes(8)


@pytest.mark.parametrize(
    "datagram",
    [
        H("FE FF 00 12 34"),
        H("00 00 00 12 34 56 78 9A BC DE F0 12 34 00"),
        H("FF FF 00 12 34 56 78 9A BC DE F0 12 34 00 00"),
        SPEC_REQUEST[:1] + H("FF") + SPEC_REQUEST[2:],
    ],
)
def test_wrong_signature_gets_no_reply(datagram: bytes) -> None:
    with pytest.raises(BadSignature) as caught:
        decode_request(datagram)
    assert str(caught.value) == "Datagram does not start with the FF FE signature."


@pytest.mark.parametrize("version", [0x01, 0x02, 0x7F, 0xFF])
def test_wrong_version_is_rejected_0x02(version: int) -> None:
    datagram = SPEC_REQUEST[:2] + bytes([version]) + SPEC_REQUEST[3:]
    with pytest.raises(BadVersion) as caught:
        decode_request(datagram)
    assert str(caught.value) == "Unsupported protocol version."
    assert caught.value.request_id == 0x1234
    assert encode_response(caught.value.response()) == H("FF FE 00 12 34 02") + bytes(8)


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        # signature is judged before length and version
        (H("00 00 01 12 34"), BadSignature),
        (H("00 00 01 12 34") + bytes(20), BadSignature),
        # length before version
        (H("FF FE 01 12 34") + bytes(10), BadLength),
        (H("FF FE 01 12 34") + bytes(9), BadVersion),
        (H("FF FE 01 12 34") + bytes(8), TruncatedRequest),
        # too short to tell anything, whatever the bytes
        (H("00 00 01 12"), ShortDatagram),
    ],
)
def test_checks_run_in_spec_order(datagram: bytes, expected: type[MonitorError]) -> None:
    with pytest.raises(MonitorError) as caught:
        decode_request(datagram)
    assert type(caught.value) is expected


def test_unknown_command_is_rejected_only_when_asked() -> None:
    request = decode_request(SPEC_REQUEST[:13] + b"\x07")
    with pytest.raises(BadCommand) as caught:
        request.checked_command()
    assert str(caught.value) == "Unknown command."
    assert caught.value.status is Status.BAD_COMMAND
    assert caught.value.response() == Response(0x1234, Status.BAD_COMMAND)


def test_each_reject_carries_its_status() -> None:
    assert {cls: cls.status for cls in (BadLength, BadVersion, AuthFailed, BadCommand)} == {
        BadLength: Status.BAD_REQUEST,
        BadVersion: Status.BAD_VERSION,
        AuthFailed: Status.AUTH_FAILED,
        BadCommand: Status.BAD_COMMAND,
    }
    assert str(AuthFailed(1)) == "Wrong token."


# --------------------------------------------------------------------------- malformed responses


@pytest.mark.parametrize(
    ("datagram", "message"),
    [
        (SPEC_RESPONSE[:13], "Response of 13 bytes; expected 14."),
        (SPEC_RESPONSE + b"\x00", "Response of 15 bytes; expected 14."),
        (b"", "Response of 0 bytes; expected 14."),
        (H("FE FF") + SPEC_RESPONSE[2:], "Response does not start with the FF FE signature."),
        (SPEC_RESPONSE[:2] + H("01") + SPEC_RESPONSE[3:], "Response has unsupported version 1."),
        (SPEC_RESPONSE[:5] + H("07") + SPEC_RESPONSE[6:], "Response has reserved status 0x07."),
        (SPEC_RESPONSE[:5] + H("FF") + SPEC_RESPONSE[6:], "Response has reserved status 0xFF."),
    ],
)
def test_malformed_responses_raise_bad_response(datagram: bytes, message: str) -> None:
    with pytest.raises(BadResponse) as caught:
        decode_response(datagram)
    assert str(caught.value) == message


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs",
    [
        {"request_id": -1, "token": b"abcdefgh", "command": 0},
        {"request_id": 0x10000, "token": b"abcdefgh", "command": 0},
        {"request_id": 1, "token": b"abcdefg", "command": 0},
        {"request_id": 1, "token": b"abcdefghi", "command": 0},
        {"request_id": 1, "token": "abcdefgh", "command": 0},
        {"request_id": 1, "token": b"abcdefgh", "command": 256},
        {"request_id": 1, "token": b"abcdefgh", "command": -1},
    ],
)
def test_request_checks_its_ranges(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Request(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"request_id": 0x10000, "status": Status.OK},
        {"request_id": 1, "status": 7},
        {"request_id": 1, "status": Status.OK, "data": bytes(7)},
        {"request_id": 1, "status": Status.OK, "data": bytes(9)},
    ],
)
def test_response_checks_its_ranges(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Response(**kwargs)


def test_response_stores_the_status_enum() -> None:
    assert Response(1, 5).status is Status.NO_TRANSFORM


@pytest.mark.parametrize("value", [-1, 0x1_0000_0000])
def test_u32_data_refuses_values_that_do_not_fit(value: int) -> None:
    with pytest.raises(ValueError):
        Response.with_u32(1, value)


def test_flag_reads_any_non_zero_first_byte_as_true() -> None:
    assert Response(1, Status.OK, H("02") + bytes(7)).flag is True
    assert Response(1, Status.OK, bytes(8)).flag is False


def test_values_are_frozen() -> None:
    request = Request(1, b"abcdefgh", 0)
    with pytest.raises(AttributeError):
        request.command = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

_quiet = settings(database=None, max_examples=500)


@_quiet
@given(st.binary(max_size=64))
def test_decode_request_raises_only_monitor_errors(datagram: bytes) -> None:
    try:
        request = decode_request(datagram)
    except MonitorError:
        return
    assert encode_request(request) == datagram


@_quiet
@given(st.binary(min_size=14, max_size=14).map(lambda b: b"\xff\xfe\x00" + b[3:]))
def test_every_well_formed_request_decodes(datagram: bytes) -> None:
    assert encode_request(decode_request(datagram)) == datagram


@_quiet
@given(st.binary(max_size=64))
def test_decode_response_raises_only_monitor_errors(datagram: bytes) -> None:
    try:
        response = decode_response(datagram)
    except MonitorError:
        return
    assert encode_response(response) == datagram


@_quiet
@given(
    st.integers(0, 0xFFFF),
    st.sampled_from(Status),
    st.binary(min_size=8, max_size=8),
)
def test_responses_round_trip(request_id: int, status: Status, data: bytes) -> None:
    response = Response(request_id, status, data)
    assert decode_response(encode_response(response)) == response
