"""The monitor protocol's wire format (SPEC §6): bytes in, typed values out.

Theory of operation
-------------------
The protocol is stateless: one 14-byte request datagram, one 14-byte response
datagram. This module only translates between bytes and the frozen dataclasses
:class:`Request` and :class:`Response`; it opens no socket, reads no clock or
setting and logs nothing, so the server (``monitor.server``) and the client
(``monitor.client``) share it and every case is testable with plain bytes.

A request is checked in the order the SPEC fixes, and the first failure is raised
as one exception class per fault, each carrying the status a reply would use:

1. signature and request id (:class:`ShortDatagram`, :class:`BadSignature`):
   without them there is nobody to answer, so :class:`NoReply`;
2. length (:class:`BadLength`, status 0x04);
3. version (:class:`BadVersion`, 0x02);
4. token (:class:`AuthFailed`, 0x01) and 5. command (:class:`BadCommand`, 0x03).

Steps 4 and 5 need the configured token, which the codec does not know, so
:func:`decode_request` keeps the command as the raw byte and the handler checks
the token first, then calls :meth:`Request.checked_command`. An unknown command
from someone without the token is therefore answered 0x01, never 0x03: the
command space is not disclosed to strangers.

Length, and why 5..13-byte requests get no reply
------------------------------------------------
SPEC §6 says every response is exactly 14 bytes *and* a reply is never longer
than its request (no amplification). A request of 15 bytes or more is answered
0x04 in 14 bytes. A request of 5 to 13 bytes carries an id we could echo, but any
valid response would be longer than it, so it gets no reply
(:class:`TruncatedRequest`, a :class:`NoReply`): an attacker who spoofs a victim's
address must never get more bytes sent to the victim than they sent us.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "DATAGRAM_SIZE",
    "MIN_ADDRESSABLE",
    "SIGNATURE",
    "TOKEN_SIZE",
    "VERSION",
    "AuthFailed",
    "BadCommand",
    "BadLength",
    "BadResponse",
    "BadSignature",
    "BadVersion",
    "Command",
    "MonitorError",
    "NoReply",
    "Reject",
    "Request",
    "Response",
    "ShortDatagram",
    "Status",
    "TruncatedRequest",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

# signature, version, request id, token, command
REQUEST = struct.Struct("!2sBH8sB")
# signature, version, request id, status, data
RESPONSE = struct.Struct("!2sBHB8s")
assert REQUEST.size == RESPONSE.size == 14

DATAGRAM_SIZE = 14
SIGNATURE = b"\xff\xfe"
VERSION = 0x00
TOKEN_SIZE = 8
DATA_SIZE = 8
#: Signature (2) + version (1) + request id (2): the least a datagram needs to be
#: attributable to a request we could answer.
MIN_ADDRESSABLE = 5
_ZERO_DATA = bytes(DATA_SIZE)
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF


class Command(IntEnum):
    """SPEC §6 commands (the request's last byte)."""

    HISTORIC_CONNECTIONS = 0x00
    CONCURRENT_CONNECTIONS = 0x01
    BYTES_TRANSFERRED = 0x02
    MAILS_SENT = 0x03
    TRANSFORM_STATUS = 0x04
    TRANSFORM_ENABLE = 0x05
    TRANSFORM_DISABLE = 0x06


class Status(IntEnum):
    """SPEC §6 response statuses; 0x07-0xFF are reserved."""

    OK = 0x00
    AUTH_FAILED = 0x01
    BAD_VERSION = 0x02
    BAD_COMMAND = 0x03
    BAD_REQUEST = 0x04
    NO_TRANSFORM = 0x05
    UNEXPECTED = 0x06


# --------------------------------------------------------------------------- errors


class MonitorError(Exception):
    """Malformed monitor datagram."""

    #: The status a reply to this fault carries (h11's ``error_status_hint``).
    status: Status = Status.BAD_REQUEST

    def __init__(self, message: str | None = None) -> None:
        # dnspython's convention: the class docstring is the default message.
        super().__init__(message or (self.__doc__ or "").strip())


class NoReply(MonitorError):
    """Datagram gets no reply."""


class ShortDatagram(NoReply):
    """Datagram too short to carry the signature, version and request id."""


class BadSignature(NoReply):
    """Datagram does not start with the FF FE signature."""


class TruncatedRequest(NoReply):
    """Request shorter than 14 bytes; a 14-byte reply would amplify it."""

    def __init__(self, request_id: int) -> None:
        super().__init__()
        self.request_id = request_id


class Reject(MonitorError):
    """Request rejected with an error status."""

    def __init__(self, request_id: int) -> None:
        super().__init__()
        self.request_id = request_id

    def response(self) -> Response:
        """The reply to send: this error's status, the request id, zero data."""
        return Response(self.request_id, self.status)


class BadLength(Reject):
    """Request longer than 14 bytes."""

    status = Status.BAD_REQUEST


class BadVersion(Reject):
    """Unsupported protocol version."""

    status = Status.BAD_VERSION


class AuthFailed(Reject):
    """Wrong token."""

    status = Status.AUTH_FAILED


class BadCommand(Reject):
    """Unknown command."""

    status = Status.BAD_COMMAND


class BadResponse(MonitorError):
    """Malformed monitor response."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Request:
    """A monitor request as it travels on the wire (the version is always 0)."""

    request_id: int
    """Arbitrary 16-bit value the server echoes back (0..65535)."""
    token: bytes
    """The 8-byte shared secret, compared by the handler in constant time."""
    command: int
    """The command byte, kept raw (0..255) so an unknown one can be represented."""

    def __post_init__(self) -> None:
        if not 0 <= self.request_id <= _U16_MAX:
            raise ValueError(f"request_id {self.request_id} out of range 0..65535")
        if not isinstance(self.token, bytes) or len(self.token) != TOKEN_SIZE:
            raise ValueError(f"token must be {TOKEN_SIZE} bytes")
        if not 0 <= self.command <= 0xFF:
            raise ValueError(f"command {self.command} out of range 0..255")

    def checked_command(self) -> Command:
        """The command as a :class:`Command`.

        Raises:
            BadCommand: the byte is not a SPEC §6 command (status 0x03).
        """
        try:
            return Command(self.command)
        except ValueError:
            raise BadCommand(self.request_id) from None


@dataclass(frozen=True, slots=True)
class Response:
    """A monitor response."""

    request_id: int
    """The id copied from the request (0..65535)."""
    status: Status
    """What happened; anything but OK means ``data`` is all zeros."""
    data: bytes = _ZERO_DATA
    """8 bytes: a uint32 and 4 zero bytes, or a boolean and 7 zero bytes."""

    def __post_init__(self) -> None:
        if not 0 <= self.request_id <= _U16_MAX:
            raise ValueError(f"request_id {self.request_id} out of range 0..65535")
        # Accept a plain int with a known value but store the enum, so that
        # equality and repr are the same however the response was built.
        object.__setattr__(self, "status", Status(self.status))
        if not isinstance(self.data, bytes) or len(self.data) != DATA_SIZE:
            raise ValueError(f"data must be {DATA_SIZE} bytes")

    @classmethod
    def with_u32(cls, request_id: int, value: int) -> Response:
        """An OK response carrying a counter (commands 0x00-0x03).

        Raises:
            ValueError: ``value`` does not fit 32 bits; saturate it first
                (``buzon.metrics.wire_u32``).
        """
        if not 0 <= value <= _U32_MAX:
            raise ValueError(f"value {value} does not fit in a uint32")
        return cls(request_id, Status.OK, value.to_bytes(4, "big") + bytes(4))

    @classmethod
    def with_flag(cls, request_id: int, flag: bool) -> Response:
        """An OK response carrying a boolean (commands 0x04-0x06)."""
        return cls(request_id, Status.OK, bytes([1 if flag else 0]) + bytes(7))

    @property
    def u32(self) -> int:
        """The data read as a counter: its first 4 bytes, big-endian."""
        return int.from_bytes(self.data[:4], "big")

    @property
    def flag(self) -> bool:
        """The data read as a boolean: its first byte, non-zero meaning true."""
        return self.data[0] != 0


# --------------------------------------------------------------------------- codec


def decode_request(datagram: bytes) -> Request:
    """Parse a request datagram, checking signature, length and version (SPEC §6).

    The token and the command are not judged here (see the module docstring).

    Args:
        datagram: the bytes of one UDP datagram.

    Returns:
        The request, with the command byte as received.

    Raises:
        ShortDatagram, BadSignature, TruncatedRequest: no reply may be sent.
        BadLength: longer than 14 bytes; reply 0x04.
        BadVersion: version byte is not 0; reply 0x02.
    """
    if len(datagram) < MIN_ADDRESSABLE:
        raise ShortDatagram()
    if datagram[:2] != SIGNATURE:
        raise BadSignature()
    request_id = int.from_bytes(datagram[3:5], "big")
    if len(datagram) < DATAGRAM_SIZE:
        raise TruncatedRequest(request_id)
    if len(datagram) > DATAGRAM_SIZE:
        raise BadLength(request_id)
    _, version, request_id, token, command = REQUEST.unpack(datagram)
    if version != VERSION:
        raise BadVersion(request_id)
    return Request(request_id, token, command)


def encode_request(request: Request) -> bytes:
    """Serialize a request to its 14 bytes.

    Args:
        request: the request; its fields were range-checked on construction.

    Returns:
        The datagram to send.
    """
    return REQUEST.pack(SIGNATURE, VERSION, request.request_id, request.token, request.command)


def decode_response(datagram: bytes) -> Response:
    """Parse a response datagram (the client side).

    Args:
        datagram: the bytes of one UDP datagram.

    Returns:
        The response.

    Raises:
        BadResponse: wrong length, signature or version, or a reserved status;
            the client ignores such a datagram as not coming from a Buzón server.
    """
    if len(datagram) != DATAGRAM_SIZE:
        raise BadResponse(f"Response of {len(datagram)} bytes; expected 14.")
    signature, version, request_id, status, data = RESPONSE.unpack(datagram)
    if signature != SIGNATURE:
        raise BadResponse("Response does not start with the FF FE signature.")
    if version != VERSION:
        raise BadResponse(f"Response has unsupported version {version}.")
    try:
        status = Status(status)
    except ValueError:
        raise BadResponse(f"Response has reserved status 0x{status:02X}.") from None
    return Response(request_id, status, data)


def encode_response(response: Response) -> bytes:
    """Serialize a response to its 14 bytes.

    Args:
        response: the response.

    Returns:
        The datagram to send.
    """
    return RESPONSE.pack(SIGNATURE, VERSION, response.request_id, response.status, response.data)
