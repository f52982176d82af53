"""The UDP monitor (SPEC §6): wire codecs (v0, v1), pure handlers, rate limiter, token, listeners.

``buzon.monitor.server`` (asyncio) and ``buzon.monitor.client`` (the
``monitor-client`` command) are imported from their modules; this package
re-exports the pure parts every side shares.
"""

from buzon.monitor.handler import TransformSwitch, handle, respond
from buzon.monitor.handler_v1 import ReplayCache, respond_v1
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
from buzon.monitor.wire_v1 import (
    CommandV1,
    RequestV1,
    ResponseV1,
    StatusV1,
    decode_request_v1,
    decode_response_v1,
    derive_key,
    encode_request_v1,
    encode_response_v1,
)

__all__ = [
    "AuthFailed",
    "BadCommand",
    "BadLength",
    "BadResponse",
    "BadSignature",
    "BadVersion",
    "Command",
    "CommandV1",
    "FailureBudget",
    "MonitorError",
    "NoReply",
    "Reject",
    "ReplayCache",
    "Request",
    "RequestV1",
    "Response",
    "ResponseV1",
    "ShortDatagram",
    "Status",
    "StatusV1",
    "TokenError",
    "TransformSwitch",
    "TruncatedRequest",
    "decode_request",
    "decode_request_v1",
    "decode_response",
    "decode_response_v1",
    "derive_key",
    "encode_request",
    "encode_request_v1",
    "encode_response",
    "encode_response_v1",
    "handle",
    "load_or_create_token",
    "read_token_file",
    "respond",
    "respond_v1",
]
