"""The smtp side of the sidecar handoff: :class:`SidecarTransform` and :func:`health`.

Theory of operation
-------------------
A sidecar shares the work area (a volume of transform files only), so
:class:`SidecarTransform` sends only the two file names of the job, relative to
its root (:func:`~buzon.transform.paths.relativize`), in one request line of
:mod:`buzon.transform.wire`, stamped and sealed with the deployment key
(:mod:`buzon.transform.auth`), and reads one answer line, whose seal must be
bound to that request: one connection per request, nothing kept open. The answer is awaited for the
transform timeout plus a margin, so the sidecar's own (equal) timeout reports
first, in words. What can go wrong on the way is named here, as a
:class:`~buzon.transform.failures.FailureKind` the wire never carries: ``down``
(refused, reset, closed without an answer), ``protocol`` (an answer that does
not decode, or an ``ok`` whose output file is missing: the two containers do not
share the volume) and ``auth`` (an answer not sealed with our key: the sidecar's
own refusal, quoted, when it says so). A sidecar's own error reply is raised with the kind it sent.
:func:`health` is the same exchange with a health request (``buzon-sidecar --health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from buzon.net import format_address
from buzon.transform.auth import (
    REQUEST_CONTEXT,
    Unauthenticated,
    new_nonce,
    reply_context,
    seal,
    unseal,
)
from buzon.transform.base import Transform
from buzon.transform.failures import FailureKind, TransformError
from buzon.transform.paths import check_job, relativize
from buzon.transform.wire import (
    MAX_LINE,
    ErrorReply,
    HealthOk,
    HealthRequest,
    Op,
    ProtocolError,
    Request,
    Response,
    Stamp,
    TransformOk,
    TransformRequest,
    decode_response,
    encode_request,
)

__all__ = ["SidecarTransform", "health"]


async def _exchange(
    host: str, port: int, request: Request, deadline: float, key: bytes
) -> Response:
    """One connection, one sealed request line, one sealed answer, within ``deadline`` s."""
    where = format_address(host, port)
    op = Op.TRANSFORM if isinstance(request, TransformRequest) else Op.HEALTH
    stamp = Stamp(int(time.time()), new_nonce())
    data = seal(key, REQUEST_CONTEXT, encode_request(request, stamp))
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(deadline):
            try:
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
                writer.write(data)
                await writer.drain()
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise TransformError(
                    FailureKind.DOWN, f"sidecar {where} closed without answering"
                ) from None
            except asyncio.LimitOverrunError:
                raise TransformError(
                    FailureKind.PROTOCOL, f"sidecar {where}: answer too long"
                ) from None
            except OSError as error:  # refused, reset, unreachable, unknown host
                reason = (os.strerror(error.errno) if error.errno
                          else str(error) or type(error).__name__)
                raise TransformError(FailureKind.DOWN, f"sidecar {where}: {reason}") from None
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
    except TimeoutError:
        raise TransformError(
            FailureKind.TIMEOUT, f"no answer from sidecar {where} within {deadline:g} s"
        ) from None
    try:
        unseal(key, reply_context(stamp.nonce), line)
    except Unauthenticated:
        raise _unsealed(where, line, op) from None
    try:
        reply = decode_response(line, op)
    except ProtocolError as error:
        raise TransformError(FailureKind.PROTOCOL, f"sidecar {where}: {error}") from None
    if isinstance(reply, ErrorReply):
        raise TransformError(reply.kind, f"sidecar {where}: {reply.detail}")
    return reply


def _unsealed(where: str, line: bytes, op: Op) -> TransformError:
    """An answer not sealed with our key: the sidecar's refusal if it is one, else forged."""
    with contextlib.suppress(ProtocolError):
        reply = decode_response(line, op)
        if isinstance(reply, ErrorReply) and reply.kind in (
            FailureKind.AUTH, FailureKind.BAD_REQUEST
        ):
            return TransformError(FailureKind.AUTH, f"sidecar {where} refused the request: "
                                                    f"{reply.detail}")
    return TransformError(FailureKind.AUTH, f"sidecar {where}: answer not sealed with our key")


class SidecarTransform(Transform):
    """A transform service in another container sharing the work area."""

    def __init__(
        self, host: str, port: int, work_root: Path, timeout: float, *, key: bytes,
        margin: float = 2.0,
    ) -> None:
        """Args:
        host, port: the sidecar's address.
        work_root: the work area's root as this process sees it; files are named
            relative to it.
        key: the deployment key shared with the sidecar.
        timeout: the transform timeout; the answer is awaited ``timeout + margin``
            seconds so the sidecar's own (equal) timeout reports first, in words.
        margin: extra seconds for the connection and the sidecar's bookkeeping.
        """
        self.host, self.port = host, port
        self.work_root = Path(work_root)
        self.timeout = timeout
        self.margin = margin
        self._key = key

    async def run(self, src: Path, dst: Path) -> None:
        try:
            request = TransformRequest(
                relativize(self.work_root, src), relativize(self.work_root, dst)
            )
            check_job(request.input, request.output)  # what the sidecar will accept
            encode_request(request, Stamp(0, new_nonce()))  # too long for a line: a path problem
        except ProtocolError as error:
            raise TransformError(FailureKind.PATH, str(error)) from None
        reply = await _exchange(self.host, self.port, request, self.timeout + self.margin,
                                self._key)
        if not isinstance(reply, TransformOk):
            raise TransformError(
                FailureKind.PROTOCOL, f"sidecar {self}: unexpected answer {reply!r}"
            )
        if not dst.is_file():
            raise TransformError(
                FailureKind.PROTOCOL,
                f"sidecar {self} reported success but {dst.name} is missing: do both "
                "containers mount the same volume at the work area's root?",
            )

    def __str__(self) -> str:
        return format_address(self.host, self.port)

    def __repr__(self) -> str:
        return f"SidecarTransform({str(self)!r})"


async def health(host: str, port: int, timeout: float, *, key: bytes) -> HealthOk:
    """Ask a sidecar whether it is up.

    Args:
        host, port: the sidecar's address.
        timeout: seconds for the whole exchange.
        key: the deployment key.

    Returns:
        Its command and load.

    Raises:
        TransformError: ``down``, ``timeout``, ``protocol`` or ``auth`` (or an
            error it answered).
    """
    reply = await _exchange(host, port, HealthRequest(), timeout, key)
    if not isinstance(reply, HealthOk):  # pragma: no cover - decode_response ensures it
        raise TransformError(FailureKind.PROTOCOL, f"unexpected answer {reply!r}")
    return reply
