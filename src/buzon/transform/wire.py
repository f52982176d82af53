"""The transform-sidecar protocol ("sidecar handoff"), version 2: JSON lines in, typed values out.

Theory of operation
-------------------
The smtp container and a transform sidecar share one volume, the *work area*
(nothing else of the server's data). The server writes a queued message there,
then names it to the sidecar over TCP; the sidecar runs its program on the file
and writes the result next to it. Only *paths* cross the wire, never message
bytes, so a request is tiny whatever the message size.

Framing: one connection per request. The client sends one line, the server
answers one line and closes. A line is one JSON object, UTF-8 (we emit pure
ASCII), terminated by ``\\n`` and at most :data:`MAX_LINE` bytes including the
newline; a longer line is refused (:class:`LineTooLong`) before it is parsed.
Every line ends with a ``"mac"`` member, an HMAC-SHA256 tag made with the
deployment key (:mod:`buzon.transform.auth`, which seals and checks it)::

    → {"v":2,"op":"transform","ts":1764420000,"nonce":"<32 hex>","input":"w0/ID.in","output":"w0/ID.out","mac":"<64 hex>"}
    ← {"v":2,"status":"ok","size":2048,"ms":3.1,"mac":"<64 hex>"}
    ← {"v":2,"status":"error","kind":"timeout","detail":"tac ran past 30 s; killed","mac":"…"}

    → {"v":2,"op":"health","ts":1764420000,"nonce":"<32 hex>","mac":"<64 hex>"}
    ← {"v":2,"status":"ok","command":["tac"],"busy":0,"limit":4,"queued":0,"mac":"…"}

Paths are relative to the work area's root each side knows, and name one job's
files only (:func:`~buzon.transform.paths.check_job`). A request's ``ts`` and
``nonce`` (its :class:`Stamp`) make it usable once.

An error reply's ``kind`` is a :class:`~buzon.transform.failures.FailureKind`, one
of the :data:`~buzon.transform.failures.WIRE_KINDS`; the others (``down``,
``protocol``, ``spawn``) never travel, and a reply carrying one is refused as
an unknown kind.

Decoders check in a fixed order and raise the first failure, one class per
fault, each carrying the error ``kind`` a reply would use (h11's
``error_status_hint``): line length, JSON object, version, op/status, fields.
Unknown extra keys (``mac`` among them) are ignored, so a later minor addition
does not break an older peer; a changed meaning gets a new ``v``. Version 1
(unauthenticated) is refused.

Nothing here opens a socket or a file, reads a clock or logs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from buzon.transform.failures import WIRE_KINDS, FailureKind

__all__ = [
    "MAX_DETAIL", "MAX_LINE", "VERSION", "BadField", "BadVersion", "ErrorReply", "HealthOk",
    "HealthRequest", "LineTooLong", "NotJSON", "Op", "PathRefused", "ProtocolError", "Request",
    "Response", "Stamp", "TransformOk", "TransformRequest", "UnknownOp", "UnknownStatus",
    "decode_request", "decode_response", "encode_request", "encode_response",
]

VERSION = 2
#: Longest line either side accepts, newline included.
MAX_LINE = 4096
#: Longest error detail sent. After sanitising it is printable ASCII, which JSON
#: escapes to at most twice its length, so an error reply always fits MAX_LINE.
MAX_DETAIL = 1000


class Op(StrEnum):
    """Request operations."""

    TRANSFORM = "transform"
    HEALTH = "health"


# --------------------------------------------------------------------------- errors


class ProtocolError(ValueError):
    """Malformed protocol line."""

    #: The error kind a reply to this fault carries.
    kind: FailureKind = FailureKind.BAD_REQUEST

    def __init__(self, detail: str | None = None) -> None:
        # dnspython's convention: the class docstring is the default message.
        super().__init__(detail or (self.__doc__ or "").strip())


class LineTooLong(ProtocolError):
    """Line longer than 4096 bytes."""


class NotJSON(ProtocolError):
    """Not a JSON object on one UTF-8 line."""


class BadVersion(ProtocolError):
    """Unsupported protocol version (expected "v":2, authenticated)."""


class UnknownOp(ProtocolError):
    """Unknown "op"."""


class UnknownStatus(ProtocolError):
    """Unknown "status"."""


class BadField(ProtocolError):
    """Missing or invalid field."""


class PathRefused(ProtocolError):
    """Path outside the work area, or not a file of the job."""

    kind = FailureKind.PATH


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class TransformRequest:
    """Run the program on one spooled file."""

    input: str
    """Message file, relative to the work area's root."""
    output: str
    """Where the result goes, relative to the work area's root (created, never replaced)."""

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise BadField(f"{name!r} must be a non-empty string")


@dataclass(frozen=True, slots=True)
class HealthRequest:
    """Is the sidecar up, and what does it run?"""


Request = TransformRequest | HealthRequest


@dataclass(frozen=True, slots=True)
class Stamp:
    """What makes a request usable once (checked by :class:`~buzon.transform.auth.ReplayGuard`)."""

    ts: int
    """Unix seconds when the client made the request."""
    nonce: str
    """16 random bytes as 32 lower-case hex digits."""

    def __post_init__(self) -> None:
        _check_count("ts", self.ts)
        if not isinstance(self.nonce, str) or not self.nonce:
            raise BadField("'nonce' must be a non-empty string")


@dataclass(frozen=True, slots=True)
class TransformOk:
    """The output file is in place."""

    size: int
    """Bytes written to the output file."""
    ms: float
    """Milliseconds the sidecar spent on the request, queueing included."""

    def __post_init__(self) -> None:
        _check_count("size", self.size)
        if not _is_number(self.ms) or not math.isfinite(self.ms) or self.ms < 0:
            raise BadField("'ms' must be a non-negative number")


@dataclass(frozen=True, slots=True)
class HealthOk:
    """The sidecar answers; its command and load."""

    command: tuple[str, ...]
    """The program and arguments the sidecar runs."""
    busy: int
    """Requests running now."""
    limit: int
    """Requests that may run at once (``--concurrency``)."""
    queued: int = 0
    """Requests waiting for a slot."""

    def __post_init__(self) -> None:
        if not isinstance(self.command, tuple) or not all(
            isinstance(a, str) for a in self.command
        ):
            raise BadField("'command' must be a list of strings")
        for name in ("busy", "limit", "queued"):
            _check_count(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The request failed; ``kind`` says how, ``detail`` says what, for a human."""

    kind: FailureKind
    """One of the :data:`~buzon.transform.failures.WIRE_KINDS`."""
    detail: str = ""
    """Printable ASCII, at most :data:`MAX_DETAIL` characters (longer is cut)."""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FailureKind) or self.kind not in WIRE_KINDS:
            raise BadField("'kind' must be a FailureKind of WIRE_KINDS")
        if not isinstance(self.detail, str):
            raise BadField("'detail' must be a string")
        # Details quote program stderr, which is arbitrary bytes: keep them one
        # printable line so logs and the line-length bound stay honest.
        clean = "".join(c if " " <= c <= "~" else "?" for c in self.detail)
        object.__setattr__(self, "detail", clean[:MAX_DETAIL])


Response = TransformOk | HealthOk | ErrorReply


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadField(f"{name!r} must be a non-negative integer")


# --------------------------------------------------------------------------- codec


#: Bytes the seal adds to a line (,"mac":" + 64 hex digits + "): kept free in every line.
_SEAL = 75


def _dump(obj: dict[str, Any], reserve: int = _SEAL) -> bytes:
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    data = line.encode("ascii") + b"\n"
    if len(data) + reserve > MAX_LINE:
        raise LineTooLong(f"encoded line is {len(data)} bytes, over {MAX_LINE - reserve}")
    return data


def _reject_constant(name: str) -> Any:
    raise NotJSON(f"{name} is not valid JSON")


def _load(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise LineTooLong()
    body = line[:-1] if line.endswith(b"\n") else line
    if b"\n" in body:
        raise NotJSON("more than one line")
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise NotJSON(f"not a JSON object: {error}") from None
    if not isinstance(obj, dict):
        raise NotJSON()
    version = obj.get("v")
    if type(version) is not int or version != VERSION:  # not true, not 1.0
        raise BadVersion()
    return obj


def _str_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadField(f"{name!r} must be a non-empty string")
    return value


def _wire_kind(value: Any) -> FailureKind:
    """An error reply's kind; one outside WIRE_KINDS (down, protocol, spawn) is unknown."""
    try:
        kind = FailureKind(value)
    except ValueError:
        pass
    else:
        if kind in WIRE_KINDS:
            return kind
    raise BadField(f"unknown error kind {value!r}")


def encode_request(request: Request, stamp: Stamp) -> bytes:
    """Encode a request as one line, not yet sealed (:func:`buzon.transform.auth.seal`).

    Args:
        request: a :class:`TransformRequest` or :class:`HealthRequest`.
        stamp: its timestamp and nonce.

    Returns:
        The JSON line, newline included, pure ASCII.

    Raises:
        LineTooLong: the paths make the line longer than :data:`MAX_LINE`.
    """
    if isinstance(request, TransformRequest):
        return _dump({"v": VERSION, "op": Op.TRANSFORM.value, "ts": stamp.ts,
                      "nonce": stamp.nonce, "input": request.input, "output": request.output})
    return _dump({"v": VERSION, "op": Op.HEALTH.value, "ts": stamp.ts, "nonce": stamp.nonce})


def decode_request(line: bytes) -> tuple[Request, Stamp]:
    """Decode one request line (its seal already checked).

    Args:
        line: the line, its trailing newline optional.

    Returns:
        A :class:`TransformRequest` or :class:`HealthRequest`, and its :class:`Stamp`.

    Raises:
        LineTooLong, NotJSON, BadVersion, UnknownOp, BadField: the first fault
            found, in that order; all are :class:`ProtocolError` of kind
            ``bad-request``.
    """
    obj = _load(line)
    op = obj.get("op")
    request: Request
    if op == Op.TRANSFORM:
        request = TransformRequest(_str_field(obj, "input"), _str_field(obj, "output"))
    elif op == Op.HEALTH:
        request = HealthRequest()
    else:
        raise UnknownOp(f"unknown op {op!r}" if isinstance(op, str) else None)
    ts = obj.get("ts")
    if type(ts) is not int:
        raise BadField("'ts' must be a non-negative integer")
    return request, Stamp(ts, _str_field(obj, "nonce"))


def encode_response(response: Response) -> bytes:
    """Encode a response as one line (``ms`` rounded to microseconds).

    Args:
        response: a :class:`TransformOk`, :class:`HealthOk` or :class:`ErrorReply`.

    Returns:
        The JSON line, newline included, pure ASCII.

    Raises:
        LineTooLong: a health reply whose command is too long to fit.
    """
    if isinstance(response, TransformOk):
        return _dump(
            {"v": VERSION, "status": "ok", "size": response.size, "ms": round(response.ms, 3)}
        )
    if isinstance(response, HealthOk):
        return _dump(
            {"v": VERSION, "status": "ok", "command": list(response.command),
             "busy": response.busy, "limit": response.limit, "queued": response.queued}
        )
    return _dump(
        {"v": VERSION, "status": "error", "kind": response.kind.value, "detail": response.detail}
    )


def decode_response(line: bytes, op: Op) -> Response:
    """Decode one response line to the request ``op`` it answers.

    Args:
        line: the line, its trailing newline optional.
        op: the operation of the request this answers; it decides what an
            ``ok`` carries.

    Returns:
        A :class:`TransformOk` or :class:`HealthOk` (per ``op``), or an :class:`ErrorReply`.

    Raises:
        LineTooLong, NotJSON, BadVersion, UnknownStatus, BadField: the first
            fault found, in that order.
    """
    obj = _load(line)
    status = obj.get("status")
    if status == "error":
        kind = _wire_kind(obj.get("kind"))
        detail = obj.get("detail", "")
        if not isinstance(detail, str):
            raise BadField("'detail' must be a string")
        return ErrorReply(kind, detail)
    if status != "ok":
        raise UnknownStatus(f"unknown status {status!r}" if isinstance(status, str) else None)
    if op == Op.HEALTH:
        command = obj.get("command")
        if not isinstance(command, list):
            raise BadField("'command' must be a list of strings")
        return HealthOk(tuple(command), obj.get("busy"), obj.get("limit"), obj.get("queued", 0))
    return TransformOk(obj.get("size"), obj.get("ms"))
