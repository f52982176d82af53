"""The smtp side of the sidecar handoff: :class:`SidecarTransform` and :func:`health`.

Theory of operation
-------------------
A sidecar shares the spool volume, so :class:`SidecarTransform` sends only the
two file names, relative to the spool root (:func:`~buzon.transform.paths.relativize`),
in one request line of :mod:`buzon.transform.wire`, and reads one answer line:
one connection per request, nothing kept open. The answer is awaited for the
transform timeout plus a margin, so the sidecar's own (equal) timeout reports
first, in words. What can go wrong on the way is named here, as a
:class:`~buzon.transform.failures.FailureKind` the wire never carries: ``down``
(refused, reset, closed without an answer) and ``protocol`` (an answer that does
not decode, or an ``ok`` whose output file is missing: the two containers do not
share the volume). A sidecar's own error reply is raised with the kind it sent.
:func:`health` is the same exchange with a health request (``buzon-sidecar --health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from buzon.net import format_address
from buzon.transform.base import Transform
from buzon.transform.failures import FailureKind, TransformError
from buzon.transform.paths import relativize
from buzon.transform.wire import (
    MAX_LINE,
    ErrorReply,
    HealthOk,
    HealthRequest,
    Op,
    ProtocolError,
    Request,
    Response,
    TransformOk,
    TransformRequest,
    decode_response,
    encode_request,
)

__all__ = ["SidecarTransform", "health"]


async def _exchange(host: str, port: int, request: Request, deadline: float) -> Response:
    """One connection, one request line, one response line, within ``deadline`` seconds."""
    where = format_address(host, port)
    op = Op.TRANSFORM if isinstance(request, TransformRequest) else Op.HEALTH
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(deadline):
            try:
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
                writer.write(encode_request(request))
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
        reply = decode_response(line, op)
    except ProtocolError as error:
        raise TransformError(FailureKind.PROTOCOL, f"sidecar {where}: {error}") from None
    if isinstance(reply, ErrorReply):
        raise TransformError(reply.kind, f"sidecar {where}: {reply.detail}")
    return reply


class SidecarTransform(Transform):
    """A transform service in another container sharing the spool volume."""

    def __init__(
        self, host: str, port: int, spool_root: Path, timeout: float, *, margin: float = 2.0
    ) -> None:
        """Args:
        host, port: the sidecar's address.
        spool_root: the spool root as this process sees it; files are named
            relative to it.
        timeout: the transform timeout; the answer is awaited ``timeout + margin``
            seconds so the sidecar's own (equal) timeout reports first, in words.
        margin: extra seconds for the connection and the sidecar's bookkeeping.
        """
        self.host, self.port = host, port
        self.spool_root = Path(spool_root)
        self.timeout = timeout
        self.margin = margin

    async def run(self, src: Path, dst: Path) -> None:
        try:
            request = TransformRequest(
                relativize(self.spool_root, src), relativize(self.spool_root, dst)
            )
            encode_request(request)  # a path too long for a line is a path problem
        except ProtocolError as error:
            raise TransformError(FailureKind.PATH, str(error)) from None
        reply = await _exchange(self.host, self.port, request, self.timeout + self.margin)
        if not isinstance(reply, TransformOk):
            raise TransformError(
                FailureKind.PROTOCOL, f"sidecar {self}: unexpected answer {reply!r}"
            )
        if not dst.is_file():
            raise TransformError(
                FailureKind.PROTOCOL,
                f"sidecar {self} reported success but {dst.name} is missing: do both "
                "containers mount the same volume at the spool root?",
            )

    def __str__(self) -> str:
        return format_address(self.host, self.port)

    def __repr__(self) -> str:
        return f"SidecarTransform({str(self)!r})"


async def health(host: str, port: int, timeout: float) -> HealthOk:
    """Ask a sidecar whether it is up.

    Args:
        host, port: the sidecar's address.
        timeout: seconds for the whole exchange.

    Returns:
        Its command and load.

    Raises:
        TransformError: ``down``, ``timeout`` or ``protocol`` (or an error it answered).
    """
    reply = await _exchange(host, port, HealthRequest(), timeout)
    if not isinstance(reply, HealthOk):  # pragma: no cover - decode_response ensures it
        raise TransformError(FailureKind.PROTOCOL, f"unexpected answer {reply!r}")
    return reply
