"""Golden tests of the sidecar protocol (v2): one table drives both directions; no sockets.

The path helpers of the protocol (check_job, confine, relativize) are in
test_paths.py; the seal and the replay guard in test_auth.py.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buzon.transform.failures import WIRE_KINDS, FailureKind
from buzon.transform.wire import (
    MAX_DETAIL,
    MAX_LINE,
    BadField,
    BadVersion,
    ErrorReply,
    HealthOk,
    HealthRequest,
    LineTooLong,
    NotJSON,
    Op,
    PathRefused,
    ProtocolError,
    Stamp,
    TransformOk,
    TransformRequest,
    UnknownOp,
    UnknownStatus,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

STAMP = Stamp(1764420000, "0123456789abcdef0123456789abcdef")
HEAD = b'{"v":2,"op":"%s","ts":1764420000,"nonce":"0123456789abcdef0123456789abcdef"'

REQUEST_CASES = [
    (
        TransformRequest("w0/0ABC.in", "w0/0ABC.out"),
        HEAD % b"transform" + b',"input":"w0/0ABC.in","output":"w0/0ABC.out"}\n',
    ),
    (HealthRequest(), HEAD % b"health" + b"}\n"),
    # Non-ASCII and JSON-special characters are escaped: every line is pure ASCII.
    (
        TransformRequest("caf\u00e9/\u00f1.in", 'a "q" \\ b'),
        HEAD % b"transform"
        + b',"input":"caf\\u00e9/\\u00f1.in","output":"a \\"q\\" \\\\ b"}\n',
    ),
]

RESPONSE_CASES = [
    (Op.TRANSFORM, TransformOk(2048, 3.125), b'{"v":2,"status":"ok","size":2048,"ms":3.125}\n'),
    (Op.TRANSFORM, TransformOk(0, 0.0), b'{"v":2,"status":"ok","size":0,"ms":0.0}\n'),
    (
        Op.HEALTH,
        HealthOk(("tac",), 0, 4, 0),
        b'{"v":2,"status":"ok","command":["tac"],"busy":0,"limit":4,"queued":0}\n',
    ),
    (
        Op.HEALTH,
        HealthOk(("spamc", "-x", "-X"), 2, 4, 7),
        b'{"v":2,"status":"ok","command":["spamc","-x","-X"],"busy":2,"limit":4,"queued":7}\n',
    ),
    *[
        (
            Op.TRANSFORM,
            ErrorReply(kind, "tac ran past 30 s"),
            b'{"v":2,"status":"error","kind":"' + kind.value.encode()
            + b'","detail":"tac ran past 30 s"}\n',
        )
        for kind in sorted(WIRE_KINDS)
    ],
    (
        Op.HEALTH,
        ErrorReply(FailureKind.INTERNAL),
        b'{"v":2,"status":"error","kind":"internal","detail":""}\n',
    ),
]


def test_error_kinds_are_the_documented_wire_names() -> None:
    assert sorted(WIRE_KINDS) == [
        "auth", "bad-request", "busy", "exit", "internal", "oversize", "path", "timeout",
    ]


@pytest.mark.parametrize(("request_", "line"), REQUEST_CASES)
def test_request_encodes_to_golden_line(request_: object, line: bytes) -> None:
    assert encode_request(request_, STAMP) == line  # type: ignore[arg-type]


@pytest.mark.parametrize(("request_", "line"), REQUEST_CASES)
def test_request_decodes_from_golden_line(request_: object, line: bytes) -> None:
    assert decode_request(line) == (request_, STAMP)
    assert decode_request(line.rstrip(b"\n")) == (request_, STAMP)  # the newline is optional


@pytest.mark.parametrize(("op", "response", "line"), RESPONSE_CASES)
def test_response_encodes_to_golden_line(op: Op, response: object, line: bytes) -> None:
    assert encode_response(response) == line  # type: ignore[arg-type]


@pytest.mark.parametrize(("op", "response", "line"), RESPONSE_CASES)
def test_response_decodes_from_golden_line(op: Op, response: object, line: bytes) -> None:
    assert decode_response(line, op) == response


def test_decoders_tolerate_whitespace_crlf_and_unknown_keys() -> None:
    # CRLF and spaces: a human typing at `nc` gets answered; extra keys are a later
    # minor version's additions, ignored by design.
    line = b' { "op" : "health" , "v" : 2, "ts": 5, "nonce": "n", "trace": "x" } \r\n'
    assert decode_request(line) == (HealthRequest(), Stamp(5, "n"))
    line = b'{"v":2,"status":"ok","size":5,"ms":2,"extra":[1,2]}'
    assert decode_response(line, Op.TRANSFORM) == TransformOk(5, 2.0)
    # "queued" is optional (an older sidecar).
    line = b'{"v":2,"status":"ok","command":["tac"],"busy":1,"limit":2}'
    assert decode_response(line, Op.HEALTH) == HealthOk(("tac",), 1, 2, 0)


def test_ms_is_rounded_to_microseconds_on_the_wire() -> None:
    line = encode_response(TransformOk(1, 2.718281828))
    assert line == b'{"v":2,"status":"ok","size":1,"ms":2.718}\n'


LONG = b'{"v":2,"op":"health","pad":"' + b"x" * MAX_LINE + b'"}'

REQUEST_ERRORS: list[tuple[bytes, type[ProtocolError], str]] = [
    (LONG, LineTooLong, "Line longer than 4096 bytes"),
    (b"", NotJSON, "not a JSON object"),
    (b"garbage\n", NotJSON, "not a JSON object"),
    (b"[1,2]\n", NotJSON, "Not a JSON object on one UTF-8 line"),
    (b'"health"\n', NotJSON, "Not a JSON object"),
    (b'{"v":2,"op":"\xff"}\n', NotJSON, "not a JSON object"),
    (b'{"v":2,"op":"health"}\n{"v":2,"op":"health"}\n', NotJSON, "more than one line"),
    (b'{"v":2,"op":"health","x":NaN}\n', NotJSON, "NaN is not valid JSON"),
    (b'{"v":2,"x":' + b"[" * 1500 + b"]" * 1500 + b"}", NotJSON, "not a JSON object"),
    (b'{"op":"health"}\n', BadVersion, "Unsupported protocol version"),
    # Version 1 carried no credential: refused, whatever it asks.
    (b'{"v":1,"op":"health"}\n', BadVersion, "authenticated"),
    (b'{"v":"2","op":"health"}\n', BadVersion, "Unsupported"),
    (b'{"v":true,"op":"health"}\n', BadVersion, "Unsupported"),
    (b'{"v":2.0,"op":"health"}\n', BadVersion, "Unsupported"),
    (b'{"v":2}\n', UnknownOp, 'Unknown "op"'),
    (b'{"v":2,"op":"exec"}\n', UnknownOp, "unknown op 'exec'"),
    (b'{"v":2,"op":7}\n', UnknownOp, 'Unknown "op"'),
    (b'{"v":2,"op":"transform","output":"o"}\n', BadField, "'input' must be a non-empty"),
    (b'{"v":2,"op":"transform","input":"","output":"o"}\n', BadField, "'input'"),
    (b'{"v":2,"op":"transform","input":"i","output":5}\n', BadField, "'output'"),
    (b'{"v":2,"op":"transform","input":["i"],"output":"o"}\n', BadField, "'input'"),
    (b'{"v":2,"op":"health"}\n', BadField, "'ts'"),
    (b'{"v":2,"op":"health","ts":"1","nonce":"n"}\n', BadField, "'ts'"),
    (b'{"v":2,"op":"health","ts":true,"nonce":"n"}\n', BadField, "'ts'"),
    (b'{"v":2,"op":"health","ts":-1,"nonce":"n"}\n', BadField, "'ts'"),
    (b'{"v":2,"op":"health","ts":1}\n', BadField, "'nonce'"),
    (b'{"v":2,"op":"health","ts":1,"nonce":7}\n', BadField, "'nonce'"),
    (b'{"v":2,"op":"transform","input":"i","output":"o","ts":1.5,"nonce":"n"}\n', BadField,
     "'ts'"),
]


@pytest.mark.parametrize(("line", "error", "message"), REQUEST_ERRORS)
def test_bad_request_lines_raise_one_class_per_fault(
    line: bytes, error: type[ProtocolError], message: str
) -> None:
    with pytest.raises(error) as caught:
        decode_request(line)
    assert type(caught.value) is error
    assert message in str(caught.value)
    assert caught.value.kind is FailureKind.BAD_REQUEST


def test_a_line_of_exactly_max_line_bytes_is_accepted() -> None:
    head = b'{"v":2,"op":"health","ts":1,"nonce":"n","pad":"'
    line = head + b"x" * (MAX_LINE - len(head) - 3) + b'"}\n'
    assert len(line) == MAX_LINE
    assert decode_request(line) == (HealthRequest(), Stamp(1, "n"))
    with pytest.raises(LineTooLong):
        decode_request(line[:-3] + b'x"}\n')


RESPONSE_ERRORS: list[tuple[Op, bytes, type[ProtocolError], str]] = [
    (Op.TRANSFORM, LONG, LineTooLong, "4096"),
    (Op.TRANSFORM, b"OK\n", NotJSON, "not a JSON object"),
    (Op.TRANSFORM, b'{"status":"ok","size":1,"ms":1}', BadVersion, "Unsupported"),
    (Op.TRANSFORM, b'{"v":2,"size":1,"ms":1}', UnknownStatus, 'Unknown "status"'),
    (Op.TRANSFORM, b'{"v":2,"status":"maybe"}', UnknownStatus, "unknown status 'maybe'"),
    (Op.TRANSFORM, b'{"v":2,"status":"error","kind":"bogus"}', BadField, "unknown error kind"),
    # The client's own kinds never travel: a reply carrying one is refused as unknown.
    (Op.TRANSFORM, b'{"v":2,"status":"error","kind":"down"}', BadField,
     "unknown error kind 'down'"),
    (Op.TRANSFORM, b'{"v":2,"status":"error","kind":"protocol"}', BadField,
     "unknown error kind 'protocol'"),
    (Op.HEALTH, b'{"v":2,"status":"error","kind":"spawn"}', BadField,
     "unknown error kind 'spawn'"),
    (Op.TRANSFORM, b'{"v":2,"status":"error","kind":["exit"]}', BadField,
     "unknown error kind ['exit']"),
    (Op.TRANSFORM, b'{"v":2,"status":"error"}', BadField, "unknown error kind None"),
    (Op.TRANSFORM, b'{"v":2,"status":"error","kind":"exit","detail":5}', BadField, "'detail'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","ms":1}', BadField, "'size'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":-1,"ms":1}', BadField, "'size'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":"3","ms":1}', BadField, "'size'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":true,"ms":1}', BadField, "'size'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":1}', BadField, "'ms'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":1,"ms":-0.5}', BadField, "'ms'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":1,"ms":1e999}', BadField, "'ms'"),
    (Op.TRANSFORM, b'{"v":2,"status":"ok","size":1,"ms":Infinity}', NotJSON, "Infinity"),
    (Op.HEALTH, b'{"v":2,"status":"ok","command":"tac","busy":0,"limit":1}', BadField,
     "'command'"),
    (Op.HEALTH, b'{"v":2,"status":"ok","command":[1],"busy":0,"limit":1}', BadField,
     "'command'"),
    (Op.HEALTH, b'{"v":2,"status":"ok","command":["tac"],"limit":1}', BadField, "'busy'"),
    (Op.HEALTH, b'{"v":2,"status":"ok","command":["tac"],"busy":0,"limit":1,"queued":-1}',
     BadField, "'queued'"),
]


@pytest.mark.parametrize(("op", "line", "error", "message"), RESPONSE_ERRORS)
def test_bad_response_lines_raise_one_class_per_fault(
    op: Op, line: bytes, error: type[ProtocolError], message: str
) -> None:
    with pytest.raises(error) as caught:
        decode_response(line, op)
    assert type(caught.value) is error
    assert message in str(caught.value)


def test_an_ok_answer_is_read_as_what_was_asked() -> None:
    # A health-shaped ok to a transform lacks size/ms: a mixed-up answer is caught.
    line = encode_response(HealthOk(("tac",), 0, 1))
    with pytest.raises(BadField):
        decode_response(line, Op.TRANSFORM)


def test_values_check_their_fields_on_construction() -> None:
    with pytest.raises(BadField):
        TransformRequest("", "out")
    with pytest.raises(BadField):
        TransformOk(-1, 0.0)
    with pytest.raises(BadField):
        TransformOk(1, float("nan"))
    with pytest.raises(BadField):
        HealthOk(["tac"], 0, 1)  # type: ignore[arg-type]
    with pytest.raises(BadField):
        ErrorReply("timeout", "x")  # type: ignore[arg-type]
    for kind in set(FailureKind) - WIRE_KINDS:  # down, protocol, spawn
        with pytest.raises(BadField):
            ErrorReply(kind, "x")


def test_error_detail_is_one_printable_ascii_line_and_bounded() -> None:
    reply = ErrorReply(FailureKind.EXIT, "line1\nline2\x00\u00e9\ttab")
    assert reply.detail == "line1?line2???tab"
    long = ErrorReply(FailureKind.EXIT, '"\\' * MAX_DETAIL)
    assert len(long.detail) == MAX_DETAIL
    line = encode_response(long)  # worst case: every character escaped
    assert len(line) <= MAX_LINE
    assert decode_response(line, Op.TRANSFORM) == long


def test_encoders_refuse_lines_over_the_limit() -> None:
    with pytest.raises(LineTooLong):
        encode_request(TransformRequest("w/" + "x" * MAX_LINE, "o"), STAMP)
    # Every line keeps room for the seal (75 bytes), so a sealed line still fits.
    fits = TransformRequest("x" * (MAX_LINE - 200), "o")
    with pytest.raises(LineTooLong):
        encode_request(TransformRequest("x" * (MAX_LINE - 150), "o"), STAMP)
    assert len(encode_request(fits, STAMP)) + 75 <= MAX_LINE
    with pytest.raises(LineTooLong):
        encode_response(HealthOk(tuple(["arg"] * 1000), 0, 1))


def test_every_error_class_is_a_protocol_error_with_a_kind() -> None:
    for cls in (LineTooLong, NotJSON, BadVersion, UnknownOp, UnknownStatus, BadField):
        assert issubclass(cls, ProtocolError)
        assert cls.kind is FailureKind.BAD_REQUEST
        assert str(cls()) == (cls.__doc__ or "").strip()
    assert PathRefused.kind is FailureKind.PATH


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoders_raise_only_protocol_errors(data: bytes) -> None:
    for decode in (decode_request, lambda d: decode_response(d, Op.TRANSFORM),
                   lambda d: decode_response(d, Op.HEALTH)):
        with contextlib.suppress(ProtocolError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_fuzz_request_round_trip(input_: str, output: str) -> None:
    request = TransformRequest(input_, output)
    line = encode_request(request, STAMP)
    assert line.isascii() and line.count(b"\n") == 1
    assert decode_request(line) == (request, STAMP)
