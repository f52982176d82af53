"""The UDP monitor (SPEC §6): wire codec, pure handler, rate limiter, token, listeners.

``buzon.monitor.server`` (asyncio) and ``buzon.monitor.client`` (the
``monitor-client`` command) are imported from their modules; this package
re-exports the pure parts every side shares.
"""

from buzon.monitor.handler import TransformSwitch, handle, respond
from buzon.monitor.ratelimit import FailureBudget
from buzon.monitor.token import TokenError, load_or_create_token, read_token_file
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

__all__ = [
    "AuthFailed",
    "BadCommand",
    "BadLength",
    "BadResponse",
    "BadSignature",
    "BadVersion",
    "Command",
    "FailureBudget",
    "MonitorError",
    "NoReply",
    "Reject",
    "Request",
    "Response",
    "ShortDatagram",
    "Status",
    "TokenError",
    "TransformSwitch",
    "TruncatedRequest",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "handle",
    "load_or_create_token",
    "read_token_file",
    "respond",
]
