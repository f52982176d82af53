"""What the monitor answers: pure decisions over injected state.

Theory of operation
-------------------
:func:`respond` is the whole server-side pipeline for one datagram, minus the
socket: :func:`~buzon.monitor.wire.decode_request` (signature, length,
version) → failure budget → token → command (:func:`handle`'s two steps) →
:func:`~buzon.monitor.wire.encode_response`. It takes everything it needs as
arguments (counters, token, transform switch, limiter, the clock) and returns the
bytes to send or ``None`` for silence, so every status, the check order and the
rate limit are unit-tested with plain bytes (STYLE practice 4).

Rate limiting. Wrong tokens are charged to a
:class:`~buzon.monitor.ratelimit.FailureBudget`: one budget for all source
addresses (so rotating addresses does not multiply it), plus an allowance for
each address that recently presented the right token (so a flood from other
addresses, forged or not, does not reach the operator). Malformed requests are
answered as usual (their statuses say nothing about the token). A well-formed
request that the budget does not admit gets *no reply*, and its token is not
compared:

- in v0 an answer to a right token is an answer to a guess: comparing while the
  budget is spent, and answering only the right token, would leave guessing
  unbounded (silence would mean "wrong");
- ``01`` without comparing would tell an operator with the right token that it
  is wrong; silence makes ``monitor-client`` resend, and each resend may find a
  refilled budget;
- silence sends nothing towards a forged source.

The server logs a warning when the global budget is spent, at most once a
minute.

Counting. ``monitor_requests`` counts every datagram received, answered or not;
``monitor_auth_failures`` counts requests answered 0x01.

Errors. The wire errors (:class:`~buzon.monitor.wire.MonitorError`) are caught
here, the single boundary. Any other exception is a bug: it is logged with its
traceback and answered 0x06 when the request is well-formed enough to answer.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Hashable
from typing import Protocol

from buzon.metrics.counters import Counters, wire_u32
from buzon.monitor.ratelimit import FailureBudget
from buzon.monitor.wire import (
    DATAGRAM_SIZE,
    SIGNATURE,
    AuthFailed,
    Command,
    NoReply,
    Reject,
    Request,
    Response,
    Status,
    decode_request,
    encode_response,
)

__all__ = ["TransformSwitch", "handle", "respond"]

log = logging.getLogger("buzon.monitor")

_COUNTER_OF = {
    Command.HISTORIC_CONNECTIONS: "historic_connections",
    Command.CONCURRENT_CONNECTIONS: "concurrent_connections",
    Command.BYTES_TRANSFERRED: "bytes_transferred",
    Command.MAILS_SENT: "mails_sent",
}


class TransformSwitch(Protocol):
    """The transform on/off state the monitor reads and flips (commands 0x04-0x06)."""

    @property
    def configured(self) -> bool:
        """Whether a transform program (or sidecar) is configured at all."""
        ...

    @property
    def enabled(self) -> bool:
        """Whether transformations are applied to new mail now."""
        ...

    def set_enabled(self, on: bool) -> None:
        """Turn transformations on or off (and persist it, if the owner wants).

        Called with ``True`` only when :attr:`configured` is true; ``False`` may be
        requested whether or not a program is configured.
        """
        ...


def handle(
    request: Request, *, counters: Counters, token: bytes, switch: TransformSwitch
) -> Response:
    """Answer one decoded request: check the token, then the command, then act.

    Args:
        request: as returned by :func:`~buzon.monitor.wire.decode_request`.
        counters: the server's counters (read only here).
        token: the configured 8-byte token.
        switch: the transform switch.

    Returns:
        The response: a saturated uint32 for 0x00-0x03, the transform status for
        0x04-0x06, or status 0x05 when enabling with no program configured.

    Raises:
        AuthFailed: the token differs (checked in constant time).
        BadCommand: the token is right but the command byte is unknown.
    """
    _authenticate(request, token)
    return _act(request, counters=counters, switch=switch)


def _authenticate(request: Request, token: bytes) -> None:
    # SPEC §6 order: token (0x01) before command (0x03). compare_digest takes the
    # same time wherever the first differing byte is.
    if not hmac.compare_digest(request.token, token):
        raise AuthFailed(request.request_id)


def _act(request: Request, *, counters: Counters, switch: TransformSwitch) -> Response:
    command = request.checked_command()
    rid = request.request_id
    counter = _COUNTER_OF.get(command)
    if counter is not None:
        # The wire carries 32 bits: saturate rather than wrap (SPEC §6, 0x02).
        return Response.with_u32(rid, wire_u32(getattr(counters, counter)))
    if command is Command.TRANSFORM_ENABLE:
        if not switch.configured:
            return Response(rid, Status.NO_TRANSFORM)
        switch.set_enabled(True)
    elif command is Command.TRANSFORM_DISABLE:
        switch.set_enabled(False)
    return Response.with_flag(rid, switch.enabled)


def respond(
    datagram: bytes,
    source: Hashable,
    *,
    counters: Counters,
    token: bytes,
    switch: TransformSwitch,
    limiter: FailureBudget,
    now: float,
) -> bytes | None:
    """Turn one received datagram into the datagram to send back, or silence.

    Never raises: this is the boundary where wire errors become statuses and
    bugs become 0x06.

    Args:
        datagram: the bytes received.
        source: the sender's address (its host part): whose allowance a wrong
            token spends, and which address a right token proves.
        counters: the server's counters; ``monitor_requests`` and
            ``monitor_auth_failures`` are incremented here.
        token: the configured 8-byte token.
        switch: the transform switch.
        limiter: the failed-authentication budget.
        now: the current time in seconds (``loop.time()`` in the server).

    Returns:
        14 bytes to send to ``source``, or None when no reply must be sent.
    """
    counters.monitor_requests += 1
    try:
        request = decode_request(datagram)
        if not limiter.admits(source, now):
            return None  # not compared: see "Rate limiting" above
        _authenticate(request, token)
        limiter.record_success(source, now)
        response = _act(request, counters=counters, switch=switch)
    except NoReply as error:
        log.debug("monitor: no reply to %s: %s", source, error)
        return None
    except AuthFailed as error:
        count_auth_failure(counters, limiter, source, now, "authentication failed")
        response = error.response()
    except Reject as error:
        log.debug("monitor: rejected request from %s: %s", source, error)
        response = error.response()
    except Exception:
        log.exception("monitor: unexpected error answering %s", source)
        response = _unexpected(datagram)
        if response is None:
            return None
    return encode_response(response)



def count_auth_failure(
    counters: Counters, limiter: FailureBudget, source: Hashable, now: float, what: str
) -> None:
    """What a failed authentication costs, in v0 and v1 alike: it is counted, spends the
    failure budget, and is logged (a warning, at most once a minute, when the budget is
    spent; else one info line saying ``what`` happened)."""
    counters.monitor_auth_failures += 1
    if limiter.record_failure(source, now):
        log.warning(
            "monitor: failed-authentication budget spent (last from %s); only "
            "recently authenticated addresses are answered until it refills",
            source,
        )
    else:
        log.info("monitor: %s from %s", what, source)

def _unexpected(datagram: bytes) -> Response | None:
    # Only a datagram that could be a request earns a 0x06: it must carry an id to
    # echo and be at least as long as the reply (no amplification).
    if len(datagram) < DATAGRAM_SIZE or datagram[:2] != SIGNATURE:
        return None
    return Response(int.from_bytes(datagram[3:5], "big"), Status.UNEXPECTED)
