"""The one vocabulary of the ways a transform fails: FailureKind and TransformError.

Theory of operation
-------------------
A transform (:class:`~buzon.transform.base.Transform`) that fails raises
:class:`TransformError`, whose ``kind`` says what went wrong and ``retryable``
whether the same message may succeed later. The *mechanism* lives in this
package; the retry, backoff and fallback policy belongs to the delivery worker
(:mod:`buzon.delivery.pipeline`), which also writes the kind into its
``X-Buzon-Transform: failed; kind=<kind>; <detail>`` header (a
:class:`FailureKind` formats as its plain value, so those bytes are the kind's
name).

Every failure has one of the eleven kinds of :class:`FailureKind`. Two tables sit
beside it: :data:`RETRYABLE` (may it go away by itself?) and
:data:`WIRE_KINDS` (may a sidecar send it in an error reply? The codec in
:mod:`buzon.transform.wire` refuses any other). The three kinds off the wire
arise on the smtp side only: ``down`` and ``protocol`` are the client's view of
a sidecar, ``spawn`` a local program that cannot start.

===============  =========  ====  =========================================================
kind             retryable  wire  meaning
===============  =========  ====  =========================================================
``timeout``      yes        yes   the program (or the sidecar's answer) ran past the timeout
``exit``         yes        yes   the program exited non-zero or died of a signal
``busy``         yes        yes   the sidecar's slots and queue are full
``down``         yes        no    the sidecar refused, reset or closed the connection
``internal``     yes        yes   an I/O error (disk full, unreadable input) or a sidecar bug
``oversize``     no         yes   the output passed ``max_output``; the program was killed
``spawn``        no         no    the local program is not found or not executable
``path``         no         yes   a file is outside the spool root, or missing on the sidecar
``bad-request``  no         yes   the sidecar did not understand us (version mismatch)
``protocol``     no         no    the sidecar's answer did not decode, or its output is missing
``auth``         yes        yes   a request or reply failed authentication (key, clock, replay)
===============  =========  ====  =========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = ["RETRYABLE", "WIRE_KINDS", "FailureKind", "TransformError"]


class FailureKind(StrEnum):
    """How a transform failed (the module table); ``str()`` gives the plain name."""

    TIMEOUT = "timeout"
    """The program ran past its timeout and was killed, or a sidecar did not answer in time."""
    EXIT = "exit"
    """The program exited non-zero or was killed by a signal; the detail quotes its stderr."""
    BUSY = "busy"
    """A sidecar's slots and queue are full, or it is already writing this output."""
    DOWN = "down"
    """A sidecar refused, reset or closed the connection without an answer (client only)."""
    INTERNAL = "internal"
    """Anything else: an I/O error (a full disk, an unreadable input) or a sidecar bug."""
    OVERSIZE = "oversize"
    """The program's output passed the size limit; it was killed."""
    SPAWN = "spawn"
    """The local program is not found or not executable (smtp side only)."""
    PATH = "path"
    """A path is outside the spool root, or the input is missing or not a file."""
    BAD_REQUEST = "bad-request"
    """A request line did not decode (on the sidecar: a version mismatch, a bug)."""
    PROTOCOL = "protocol"
    """A sidecar's answer did not decode, or its reported output is missing (client only)."""
    AUTH = "auth"
    """A request or reply failed authentication: different keys, clocks apart, a replay."""

    @property
    def retryable(self) -> bool:
        """Whether the same message may succeed later (:data:`RETRYABLE`)."""
        return RETRYABLE[self]

    @property
    def on_wire(self) -> bool:
        """Whether a sidecar may send this kind in an error reply (:data:`WIRE_KINDS`)."""
        return self in WIRE_KINDS


#: Whether a failure of each kind may go away by itself (the module table).
RETRYABLE: Mapping[FailureKind, bool] = MappingProxyType({
    FailureKind.TIMEOUT: True,
    FailureKind.EXIT: True,
    FailureKind.BUSY: True,
    FailureKind.DOWN: True,
    FailureKind.INTERNAL: True,
    FailureKind.OVERSIZE: False,
    FailureKind.SPAWN: False,
    FailureKind.PATH: False,
    FailureKind.BAD_REQUEST: False,
    FailureKind.PROTOCOL: False,
    # Retried: fixing the key or the clock must not let mail past the filter meanwhile.
    FailureKind.AUTH: True,
})
#: The kinds an error reply may carry; the wire decoder refuses any other as unknown.
WIRE_KINDS: frozenset[FailureKind] = frozenset({
    FailureKind.TIMEOUT,
    FailureKind.EXIT,
    FailureKind.OVERSIZE,
    FailureKind.PATH,
    FailureKind.BUSY,
    FailureKind.BAD_REQUEST,
    FailureKind.INTERNAL,
    FailureKind.AUTH,
})
assert RETRYABLE.keys() == set(FailureKind)


class TransformError(Exception):
    """A transform failed; ``kind`` says how, ``detail`` what, ``retryable`` whether it may pass."""

    def __init__(
        self, kind: FailureKind | str, detail: str, retryable: bool | None = None
    ) -> None:
        """Args:
        kind: a :class:`FailureKind`, or its plain name.
        detail: one line for logs and the ``X-Buzon-Transform`` header.
        retryable: defaults to the kind's (:data:`RETRYABLE`).

        Raises:
            ValueError: ``kind`` names no :class:`FailureKind`.
        """
        kind = FailureKind(kind)
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retryable = kind.retryable if retryable is None else retryable

