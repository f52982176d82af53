"""The monitor protocol's version 1 (docs/protocol.md): bytes in, typed values out.

Theory of operation
-------------------
v1 shares v0's UDP port and its first three bytes (``FF FE`` and the version),
so the server tells them apart by the version byte alone. Where v0 carries the
token in clear and 32-bit counters, v1 carries:

* a random 64-bit **nonce**, which is also the request's identifier, echoed
  back in the response;
* a **timestamp** (Unix seconds, uint64) which the server accepts only within
  ``MAX_SKEW`` seconds of its own clock; inside that window each nonce is
  accepted once (the replay cache lives in ``monitor.handler_v1``);
* a **MAC**: HMAC-SHA256 keyed with a key derived from the token, over a fixed
  context string and every byte before the MAC, truncated to 16 bytes
  (128 bits: a forger's only route is an online guess, each guess one datagram
  charged to the failure budget; 2^-128 per guess is beyond reach, and the
  truncation keeps the response as short as the request). The token itself is
  never on the wire;
* 64-bit counters, saturating at 2^64-1.

Requests and responses are both exactly 36 bytes, so a reply is never longer
than its request (no amplification). Responses are sealed too (another context
string), except the two that the server sends to a peer it could not
authenticate (``01`` auth failed, ``04`` bad request): those carry 16 zero
bytes as MAC, since sealing them would sign for strangers, and a forged one can
only make a client give up, which dropping the datagram could do anyway.

This module opens no socket and reads no clock: the key, the time and the
nonce are arguments. The key derivation (PBKDF2, below) is the one slow step and
is cached per token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

from buzon.monitor.wire import SIGNATURE, MonitorError, NoReply

__all__ = [
    "DATAGRAM_SIZE_V1",
    "MAC_SIZE",
    "MAX_SKEW",
    "U64_MAX",
    "VERSION_V1",
    "BadMac",
    "BadResponseV1",
    "CommandV1",
    "LongRequestV1",
    "RequestV1",
    "ResponseV1",
    "ShortRequestV1",
    "StatusV1",
    "decode_request_v1",
    "decode_response_v1",
    "derive_key",
    "encode_request_v1",
    "encode_response_v1",
    "is_v1",
    "saturate_u64",
]

# signature, version, nonce, timestamp, command, mac
REQUEST_V1 = struct.Struct("!2sBQQB16s")
# signature, version, nonce, status, value, mac
RESPONSE_V1 = struct.Struct("!2sBQBQ16s")
assert REQUEST_V1.size == RESPONSE_V1.size == 36

DATAGRAM_SIZE_V1 = 36
VERSION_V1 = 0x01
MAC_SIZE = 16
#: Bytes covered by the MAC: everything before it.
SEALED = DATAGRAM_SIZE_V1 - MAC_SIZE
#: Seconds a request's timestamp may differ from the server's clock, either way.
MAX_SKEW = 30
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
_NO_MAC = bytes(MAC_SIZE)
_REQUEST_CONTEXT = b"buzon-monitor-v1 request\n"
_RESPONSE_CONTEXT = b"buzon-monitor-v1 response\n"
_KDF_SALT = b"buzon-monitor-v1"
_KDF_ROUNDS = 20_000


class CommandV1(IntEnum):
    """v1 commands: v0's seven, then four counters v0 lacks."""

    HISTORIC_CONNECTIONS = 0x00
    CONCURRENT_CONNECTIONS = 0x01
    BYTES_TRANSFERRED = 0x02
    MAILS_SENT = 0x03
    TRANSFORM_STATUS = 0x04
    TRANSFORM_ENABLE = 0x05
    TRANSFORM_DISABLE = 0x06
    QUEUE_DEPTH = 0x07
    DELIVERIES = 0x08
    TRANSFORM_FAILURES = 0x09
    REFUSED_MESSAGES = 0x0A


class StatusV1(IntEnum):
    """v1 statuses: v0's seven, then the two of the replay rule."""

    OK = 0x00
    AUTH_FAILED = 0x01
    BAD_VERSION = 0x02
    BAD_COMMAND = 0x03
    BAD_REQUEST = 0x04
    NO_TRANSFORM = 0x05
    UNEXPECTED = 0x06
    STALE = 0x07
    REPLAYED = 0x08


#: Statuses sent to a peer that was not authenticated: not sealed.
UNSEALED = frozenset({StatusV1.AUTH_FAILED, StatusV1.BAD_REQUEST})


def saturate_u64(value: int) -> int:
    """Clamp a counter into the wire's uint64 (saturating, never wrapping)."""
    return min(max(value, 0), U64_MAX)


@functools.lru_cache(maxsize=8)
def derive_key(token: bytes) -> bytes:
    """The 32-byte MAC key of a token: PBKDF2-HMAC-SHA256, 20,000 rounds.

    The rounds cost an offline guesser of a captured datagram's token that much
    more per guess (the token is only 8 characters); the client pays them once
    per run (a few ms), the server once per start.
    """
    return hashlib.pbkdf2_hmac("sha256", token, _KDF_SALT, _KDF_ROUNDS)


def _mac(key: bytes, context: bytes, body: bytes) -> bytes:
    return hmac.new(key, context + body, hashlib.sha256).digest()[:MAC_SIZE]


def is_v1(datagram: bytes) -> bool:
    """Whether the server should judge this datagram by v1's rules.

    A datagram with version byte 01 and at least 36 bytes; anything else
    (including a short 01 datagram) goes on being judged by v0's rules, which
    are byte-exact with the seed (a 14-byte 01 datagram is answered v0 ``02``).
    """
    return len(datagram) >= DATAGRAM_SIZE_V1 and datagram[:3] == SIGNATURE + b"\x01"


# --------------------------------------------------------------------------- errors


class ShortRequestV1(NoReply):
    """v1 request shorter than 36 bytes."""


class LongRequestV1(MonitorError):
    """v1 request longer than 36 bytes."""

    status = StatusV1.BAD_REQUEST  # type: ignore[assignment]

    def __init__(self, nonce: int) -> None:
        super().__init__()
        self.nonce = nonce


class BadMac(MonitorError):
    """v1 request whose MAC does not verify with the token."""

    status = StatusV1.AUTH_FAILED  # type: ignore[assignment]

    def __init__(self, nonce: int) -> None:
        super().__init__()
        self.nonce = nonce


class BadResponseV1(MonitorError):
    """Malformed or unsealed v1 response."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class RequestV1:
    """A v1 request, as authenticated by :func:`decode_request_v1`."""

    nonce: int
    """Random 64-bit identifier; accepted once, echoed in the response."""
    timestamp: int
    """Unix seconds at the client (uint64)."""
    command: int
    """The command byte, kept raw (0..255) so an unknown one can be represented."""

    def __post_init__(self) -> None:
        if not 0 <= self.nonce <= U64_MAX:
            raise ValueError(f"nonce {self.nonce} out of range 0..2^64-1")
        if not 0 <= self.timestamp <= U64_MAX:
            raise ValueError(f"timestamp {self.timestamp} out of range 0..2^64-1")
        if not 0 <= self.command <= 0xFF:
            raise ValueError(f"command {self.command} out of range 0..255")


@dataclass(frozen=True, slots=True)
class ResponseV1:
    """A v1 response."""

    nonce: int
    """The nonce copied from the request."""
    status: StatusV1
    """What happened; anything but OK carries value 0, except STALE (the server's clock)."""
    value: int = 0
    """A uint64: a counter, a boolean (0 or 1), or for STALE the server's Unix time."""

    def __post_init__(self) -> None:
        if not 0 <= self.nonce <= U64_MAX:
            raise ValueError(f"nonce {self.nonce} out of range 0..2^64-1")
        object.__setattr__(self, "status", StatusV1(self.status))
        if not 0 <= self.value <= U64_MAX:
            raise ValueError(f"value {self.value} does not fit in a uint64")


# --------------------------------------------------------------------------- codec


def encode_request_v1(request: RequestV1, key: bytes) -> bytes:
    """Serialize and seal a request (36 bytes); ``key`` is :func:`derive_key` (token)."""
    body = REQUEST_V1.pack(
        SIGNATURE, VERSION_V1, request.nonce, request.timestamp, request.command, _NO_MAC
    )[:SEALED]
    return body + _mac(key, _REQUEST_CONTEXT, body)


def decode_request_v1(datagram: bytes, key: bytes) -> RequestV1:
    """Parse a v1 request and verify its MAC (constant-time comparison).

    The timestamp and the nonce are judged by the handler, which has the clock
    and the replay cache.

    Raises:
        ShortDatagram, BadSignature, ShortRequestV1: no reply (not v1-shaped or
            shorter than the reply would be).
        LongRequestV1: longer than 36 bytes; reply 04, unsealed.
        BadMac: the MAC does not verify; reply 01, unsealed.
    """
    if len(datagram) < DATAGRAM_SIZE_V1:
        raise ShortRequestV1()
    _, version, nonce, timestamp, command, mac = REQUEST_V1.unpack_from(datagram)
    if datagram[:2] != SIGNATURE or version != VERSION_V1:
        raise ShortRequestV1("Not a v1 request.")
    if len(datagram) > DATAGRAM_SIZE_V1:
        raise LongRequestV1(nonce)
    if not hmac.compare_digest(mac, _mac(key, _REQUEST_CONTEXT, datagram[:SEALED])):
        raise BadMac(nonce)
    return RequestV1(nonce, timestamp, command)


def encode_response_v1(response: ResponseV1, key: bytes) -> bytes:
    """Serialize a response (36 bytes), sealed unless its status is in :data:`UNSEALED`."""
    body = RESPONSE_V1.pack(
        SIGNATURE, VERSION_V1, response.nonce, response.status, response.value, _NO_MAC
    )[:SEALED]
    if response.status in UNSEALED:
        return body + _NO_MAC
    return body + _mac(key, _RESPONSE_CONTEXT, body)


def decode_response_v1(datagram: bytes, key: bytes) -> ResponseV1:
    """Parse a v1 response and verify its seal (the client side).

    Raises:
        BadResponseV1: wrong length, signature or version, a reserved status, a
            seal that does not verify, or an unsealed reply with a status that
            must be sealed; the client ignores such a datagram.
    """
    if len(datagram) != DATAGRAM_SIZE_V1:
        raise BadResponseV1(f"Response of {len(datagram)} bytes; expected 36.")
    signature, version, nonce, status, value, mac = RESPONSE_V1.unpack(datagram)
    if signature != SIGNATURE or version != VERSION_V1:
        raise BadResponseV1("Response is not a v1 monitor response.")
    try:
        status = StatusV1(status)
    except ValueError:
        raise BadResponseV1(f"Response has reserved status 0x{status:02X}.") from None
    if status in UNSEALED:
        if mac != _NO_MAC or value != 0:
            raise BadResponseV1("Unsealed response carries a MAC or a value.")
    elif not hmac.compare_digest(mac, _mac(key, _RESPONSE_CONTEXT, datagram[:SEALED])):
        raise BadResponseV1("Response seal does not verify.")
    return ResponseV1(nonce, status, value)
