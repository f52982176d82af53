"""What the monitor answers to a v1 request: pure decisions, the clocks passed in.

Theory of operation
-------------------
:func:`respond_v1` turns one v1 datagram into the 36 bytes to send back, or
``None`` for silence, in this order (docs/protocol.md, "Version 1"):

1. shape (:func:`~buzon.monitor.wire_v1.decode_request_v1`): shorter than 36
   bytes, no reply; longer, ``04`` (unsealed);
2. the failure budget (:class:`~buzon.monitor.ratelimit.FailureBudget`, the
   same one v0 draws on): a request it does not admit gets no reply and its
   MAC is not checked, for v0's reason: a MAC that verifies is a guessed token;
3. the MAC (constant time); a wrong one answers ``01`` (unsealed) and is
   charged to the budget, a right one proves the source address;
4. the timestamp, within ``MAX_SKEW`` seconds of ``wall`` either way, else
   ``07`` carrying the server's time, so the client can report the skew;
5. the nonce, not seen inside the window (:class:`ReplayCache`), else ``08``;
6. the command, as v0 plus four counters; unknown: ``03``.

Two clocks: ``now`` is the monotonic clock the budget runs on (``loop.time()``),
``wall`` is Unix time, which the client's timestamp is compared with.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from buzon.monitor.handler import TransformSwitch, count_auth_failure
from buzon.monitor.ratelimit import FailureBudget
from buzon.monitor.wire import NoReply
from buzon.monitor.wire_v1 import (
    DATAGRAM_SIZE_V1,
    MAX_SKEW,
    BadMac,
    CommandV1,
    LongRequestV1,
    RequestV1,
    ResponseV1,
    StatusV1,
    decode_request_v1,
    encode_response_v1,
    saturate_u64,
)

__all__ = ["MAX_REMEMBERED", "ReplayCache", "handle_v1", "respond_v1"]

log = logging.getLogger("buzon.monitor")

#: Most nonces remembered at once; past it new requests are refused as replays
#: until old ones leave the window (never forgotten early, which would reopen them).
MAX_REMEMBERED = 65536

_COUNTER_OF = {
    CommandV1.HISTORIC_CONNECTIONS: "historic_connections",
    CommandV1.CONCURRENT_CONNECTIONS: "concurrent_connections",
    CommandV1.BYTES_TRANSFERRED: "bytes_transferred",
    CommandV1.MAILS_SENT: "mails_sent",
    CommandV1.QUEUE_DEPTH: "queue_depth",
    CommandV1.DELIVERIES: "deliveries",
    CommandV1.TRANSFORM_FAILURES: "transform_failed",
    CommandV1.REFUSED_MESSAGES: "refused_messages",
}


class ReplayCache:
    """Nonces of accepted requests, kept until their timestamp leaves the window."""

    def __init__(self, *, skew: int = MAX_SKEW, limit: int = MAX_REMEMBERED) -> None:
        self.skew = skew
        self.limit = limit
        self._seen: OrderedDict[int, int] = OrderedDict()  # nonce -> forget after (wall s)

    def __len__(self) -> int:
        return len(self._seen)

    def fresh(self, nonce: int, timestamp: int, wall: float) -> bool:
        """Record ``nonce`` if it was not seen; False for a replay (or a full cache).

        A nonce is remembered until its timestamp is ``skew`` seconds in the past,
        after which the timestamp check alone refuses it.
        """
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until >= wall:
                break
            del self._seen[oldest]
        if nonce in self._seen or len(self._seen) >= self.limit:
            return False
        self._seen[nonce] = timestamp + self.skew
        # Kept in expiry order: timestamps are within the window, so nearly sorted;
        # a later expiry only delays the sweep, never forgets a nonce early.
        return True


def handle_v1(
    request: RequestV1,
    *,
    counters: Any,
    switch: TransformSwitch,
    replay: ReplayCache,
    wall: float,
) -> ResponseV1:
    """Answer an authenticated request: timestamp, nonce, then the command."""
    nonce = request.nonce
    if abs(request.timestamp - wall) > replay.skew:
        return ResponseV1(nonce, StatusV1.STALE, int(max(wall, 0)))
    if not replay.fresh(nonce, request.timestamp, wall):
        return ResponseV1(nonce, StatusV1.REPLAYED)
    try:
        command = CommandV1(request.command)
    except ValueError:
        return ResponseV1(nonce, StatusV1.BAD_COMMAND)
    counter = _COUNTER_OF.get(command)
    if counter is not None:
        return ResponseV1(nonce, StatusV1.OK, saturate_u64(getattr(counters, counter)))
    if command is CommandV1.TRANSFORM_ENABLE:
        if not switch.configured:
            return ResponseV1(nonce, StatusV1.NO_TRANSFORM)
        switch.set_enabled(True)
    elif command is CommandV1.TRANSFORM_DISABLE:
        switch.set_enabled(False)
    return ResponseV1(nonce, StatusV1.OK, int(switch.enabled))


def respond_v1(
    datagram: bytes,
    source: Hashable,
    *,
    counters: Any,
    key: bytes,
    switch: TransformSwitch,
    limiter: FailureBudget,
    replay: ReplayCache,
    now: float,
    wall: float,
) -> bytes | None:
    """One v1 datagram in, the reply out (or None). Never raises.

    Args:
        datagram: the bytes received (``wire_v1.is_v1`` is true of them).
        source: the sender's host, as for v0's budget.
        counters: the server's counters (``monitor_auth_failures`` counted here;
            the caller counts ``monitor_requests``).
        key: ``wire_v1.derive_key(token)``.
        switch: the transform switch.
        limiter: the failure budget shared with v0.
        replay: the nonce cache.
        now: monotonic seconds (the budget's clock).
        wall: Unix seconds (the timestamps' clock).
    """
    try:
        if len(datagram) > DATAGRAM_SIZE_V1:
            raise LongRequestV1(int.from_bytes(datagram[3:11], "big"))
        if not limiter.admits(source, now):
            return None
        request = decode_request_v1(datagram, key)
        limiter.record_success(source, now)
        response = handle_v1(request, counters=counters, switch=switch, replay=replay, wall=wall)
    except NoReply as error:
        log.debug("monitor: no reply to %s: %s", source, error)
        return None
    except BadMac as error:
        count_auth_failure(counters, limiter, source, now, "v1 authentication failed")
        response = ResponseV1(error.nonce, StatusV1.AUTH_FAILED)
    except LongRequestV1 as error:
        response = ResponseV1(error.nonce, StatusV1.BAD_REQUEST)
    except Exception:
        log.exception("monitor: unexpected error answering %s", source)
        response = ResponseV1(int.from_bytes(datagram[3:11], "big"), StatusV1.UNEXPECTED)
    return encode_response_v1(response, key)
