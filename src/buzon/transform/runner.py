"""Running transforms on the smtp side: a local program, a sidecar, or a chain of them.

Theory of operation
-------------------
A transform turns one message file into another: ``await t.run(src, dst)``
reads ``src`` and leaves the result in ``dst``, which appears atomically (the
bytes go to ``dst.tmp``, are flushed to disk, then renamed), so a reader never
sees half a message and a crash leaves either the whole output or none. On
failure ``run`` raises :class:`TransformError`, whose ``kind`` says what went
wrong and ``retryable`` whether the same message may succeed later. The
*mechanism* lives here; the retry, backoff and fallback policy belongs to the
delivery worker (:mod:`buzon.spool.worker`).

=============  =========  ===========================================================
kind           retryable  meaning
=============  =========  ===========================================================
``timeout``    yes        the program (or the sidecar's answer) ran past the timeout
``exit``       yes        the program exited non-zero or died of a signal
``busy``       yes        the sidecar's slots and queue are full
``down``       yes        the sidecar refused, reset or closed the connection
``internal``   yes        an I/O error (disk full, unreadable input) or a sidecar bug
``oversize``   no         the output passed ``max_output``; the program was killed
``spawn``      no         the local program is not found or not executable
``path``       no         a file is outside the spool root, or missing on the sidecar
``bad-request`` no        the sidecar did not understand us (version mismatch)
``protocol``   no         the sidecar's answer did not decode, or its output is missing
=============  =========  ===========================================================

:func:`run_command` is the one place a program is run, for :class:`LocalCommand`
and for the sidecar server alike: stdin is the input file, stdout is copied to the
output with a byte cap, stderr's first bytes are kept for the error detail. The
program gets its own process group (``start_new_session``), so a kill on timeout or
oversize also reaches whatever it forked (``sh -c``, pipelines).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from buzon.transform.protocol import (
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
    relativize,
)

__all__ = [
    "RETRYABLE",
    "Chain",
    "LocalCommand",
    "SidecarTransform",
    "Transform",
    "TransformError",
    "build_transforms",
    "health",
    "parse_address",
    "run_command",
]

log = logging.getLogger(__name__)

#: Whether a failure of each kind may go away by itself (see the table above).
RETRYABLE: dict[str, bool] = {
    "timeout": True, "exit": True, "busy": True, "down": True, "internal": True,
    "oversize": False, "spawn": False, "path": False, "bad-request": False, "protocol": False,
}
_CHUNK = 1 << 16
_STDERR_KEEP = 300  # bytes of stderr quoted in an "exit" detail
_DRAIN = 2.0  # seconds a killed program's pipes get to close


class TransformError(Exception):
    """A transform failed; ``kind`` says how (module table), ``detail`` what."""

    def __init__(self, kind: str, detail: str, retryable: bool | None = None) -> None:
        """Args:
        kind: one of the kinds in :data:`RETRYABLE`.
        detail: one line for logs and the ``X-Buzon-Transform`` header.
        retryable: defaults to :data:`RETRYABLE` for ``kind``.
        """
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retryable = RETRYABLE.get(kind, True) if retryable is None else retryable


class Transform(abc.ABC):
    """One way of turning a message file into another."""

    @abc.abstractmethod
    async def run(self, src: Path, dst: Path) -> None:
        """Transform the message in ``src``, leaving the result in ``dst`` atomically.

        Raises:
            TransformError: the transform failed; ``dst`` was not created.
        """


# --------------------------------------------------------------------------- local program


async def run_command(
    argv: Sequence[str],
    src: Path,
    dst: Path,
    *,
    timeout: float,
    max_output: int,
    fsync: bool = True,
) -> int:
    """Run ``argv`` with ``src`` on stdin; its stdout becomes ``dst``, atomically.

    Args:
        argv: the program and its arguments (no shell).
        src: the input file (a symlink as its last component is refused).
        dst: the output file; written as ``dst.tmp``, flushed, then renamed.
        timeout: seconds the whole run may take.
        max_output: largest output allowed, in bytes.
        fsync: flush the output to disk before the rename.

    Returns:
        The size of the output in bytes.

    Raises:
        TransformError: kinds ``timeout``, ``oversize``, ``exit``, ``spawn``,
            ``internal``; ``dst`` is untouched and the temporary file removed.
    """
    name = os.path.basename(argv[0])
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        stdin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise TransformError("internal", f"cannot read {src.name}: {error.strerror}") from None
    try:
        # O_NOFOLLOW: a symlink planted at the temporary name cannot redirect the write.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        out_fd = os.open(tmp, flags, 0o666)
    except OSError as error:
        os.close(stdin)
        raise TransformError("internal", f"cannot write {tmp.name}: {error.strerror}") from None
    try:
        # Small writes to the page cache, done on the loop; only the fsync (which
        # can stall for long) goes to a thread.
        with open(out_fd, "wb") as out:  # noqa: ASYNC230 - wraps the fd opened above
            try:
                proc = await _spawn(argv, stdin)
            finally:
                os.close(stdin)  # the child has its own copy
            size = await _supervise(proc, out, name, timeout, max_output)
            try:
                out.flush()
                if fsync:
                    await asyncio.to_thread(os.fsync, out.fileno())
            except OSError as error:
                raise TransformError("internal", f"cannot write the output: {error}") from None
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size


async def _spawn(argv: Sequence[str], stdin: int) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise TransformError("spawn", f"program not found: {argv[0]!r}") from None
    except PermissionError:
        raise TransformError("spawn", f"program not executable: {argv[0]!r}") from None
    except OSError as error:
        raise TransformError("spawn", f"cannot start {argv[0]!r}: {error}") from None


class _Oversize(Exception):
    pass


async def _supervise(
    proc: asyncio.subprocess.Process, out: IO[bytes], name: str, timeout: float, limit: int
) -> int:
    """Copy stdout to ``out`` under the cap and deadline; kill the group on any failure."""
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.ensure_future(_head(proc.stderr, _STDERR_KEEP))
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await proc.stdout.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _Oversize
                out.write(chunk)
            returncode = await proc.wait()
            head = await stderr
    except TimeoutError:
        await _kill(proc, stderr)
        raise TransformError("timeout", f"{name} ran past {timeout:g} s; killed") from None
    except _Oversize:
        await _kill(proc, stderr)
        raise TransformError("oversize", f"{name} wrote more than {limit} bytes; killed") from None
    except OSError as error:  # writing the output (disk full...)
        await _kill(proc, stderr)
        raise TransformError("internal", f"cannot write the output: {error}") from None
    except BaseException:  # cancelled: the program must not outlive its caller
        await _kill(proc, stderr)
        raise
    if returncode != 0:
        text = " ".join(head.decode("utf-8", "replace").split())
        how = (f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0
               else f"exited with status {returncode}")
        raise TransformError("exit", f"{name} {how}" + (f": {text}" if text else ""))
    return size


async def _head(stream: asyncio.StreamReader, keep: int) -> bytes:
    """Read a stream to its end (so the program never blocks on it), keep its start."""
    kept = b""
    while chunk := await stream.read(_CHUNK):
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
    return kept


async def _kill(proc: asyncio.subprocess.Process, stderr: asyncio.Future[bytes]) -> None:
    """Kill the program's process group and reap it, draining its pipes.

    The pipes are read to their end because asyncio only reaps the process and
    closes the transport once both have closed (a paused, full pipe would keep
    it open forever).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(_DRAIN):
            while await proc.stdout.read(_CHUNK):
                pass
            await stderr
            await proc.wait()
    except TimeoutError:
        # A descendant left the process group and still holds a pipe: stop waiting.
        log.warning("pid %d: pipes still open %g s after the kill; closing them", proc.pid, _DRAIN)
        stderr.cancel()
        transport: Any = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()


class LocalCommand(Transform):
    """A program run as a child of this process (native runs, the seed's ``-T tac``)."""

    def __init__(
        self, argv: Sequence[str], timeout: float, max_output: int, *, fsync: bool = True
    ) -> None:
        """Args:
        argv: the program and its arguments, e.g. ``["tac"]``.
        timeout: seconds one message may take.
        max_output: largest output accepted, in bytes.
        fsync: flush the output before renaming it into place.
        """
        if not argv:
            raise ValueError("a transform needs a program")
        self.argv = list(argv)
        self.timeout = timeout
        self.max_output = max_output
        self.fsync = fsync

    async def run(self, src: Path, dst: Path) -> None:
        await run_command(self.argv, src, dst, timeout=self.timeout,
                          max_output=self.max_output, fsync=self.fsync)

    def __repr__(self) -> str:
        return f"LocalCommand({shlex.join(self.argv)!r})"


# --------------------------------------------------------------------------- sidecar


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6).

    Raises:
        ValueError: no port, a port outside 1-65535, or an unbracketed IPv6 address.
    """
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:7000")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port with a port in 1-65535")
    return host, int(port)


async def _exchange(host: str, port: int, request: Request, deadline: float) -> Response:
    """One connection, one request line, one response line, within ``deadline`` seconds."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
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
                raise TransformError("down", f"sidecar {where} closed without answering") from None
            except asyncio.LimitOverrunError:
                raise TransformError("protocol", f"sidecar {where}: answer too long") from None
            except OSError as error:  # refused, reset, unreachable, unknown host
                reason = (os.strerror(error.errno) if error.errno
                          else str(error) or type(error).__name__)
                raise TransformError("down", f"sidecar {where}: {reason}") from None
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
    except TimeoutError:
        raise TransformError(
            "timeout", f"no answer from sidecar {where} within {deadline:g} s"
        ) from None
    try:
        reply = decode_response(line, op)
    except ProtocolError as error:
        raise TransformError("protocol", f"sidecar {where}: {error}") from None
    if isinstance(reply, ErrorReply):
        raise TransformError(reply.kind.value, f"sidecar {where}: {reply.detail}")
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
            raise TransformError("path", str(error)) from None
        reply = await _exchange(self.host, self.port, request, self.timeout + self.margin)
        if not isinstance(reply, TransformOk):
            raise TransformError("protocol", f"sidecar {self}: unexpected answer {reply!r}")
        if not dst.is_file():
            raise TransformError(
                "protocol",
                f"sidecar {self} reported success but {dst.name} is missing: do both "
                "containers mount the same volume at the spool root?",
            )

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

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
        raise TransformError("protocol", f"unexpected answer {reply!r}")
    return reply


# --------------------------------------------------------------------------- chains


class Chain(Transform):
    """Several transforms in order; intermediate files sit next to ``dst``."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        if not transforms:
            raise ValueError("a chain needs at least one transform")
        self.transforms = list(transforms)

    async def run(self, src: Path, dst: Path) -> None:
        n = len(self.transforms)
        # Next to dst, so they are inside the spool root when dst is (sidecars).
        between = [dst.with_name(f"{dst.name}.stage{i}") for i in range(1, n)]
        try:
            for i, (stage, a, b) in enumerate(
                zip(self.transforms, [src, *between], [*between, dst], strict=True), 1
            ):
                try:
                    await stage.run(a, b)
                except TransformError as error:
                    raise TransformError(
                        error.kind, f"stage {i}/{n} {stage!r}: {error.detail}", error.retryable
                    ) from error
        finally:
            for path in between:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return "Chain(" + " | ".join(repr(t) for t in self.transforms) + ")"


def _split_pipeline(spec: str) -> list[list[str]]:
    """Split a program line on unquoted ``|``, then shell-split each stage.

    A quoted or escaped ``|`` stays an argument (``tr '|' x``); no shell runs.
    """
    parts: list[str] = []
    start, quote, escaped = 0, "", False
    for i, char in enumerate(spec):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "|":
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    stages = [shlex.split(part) for part in parts]  # raises ValueError on open quotes
    if any(not stage for stage in stages):
        raise ValueError(f"transform {spec!r} has an empty stage")
    return stages


def build_transforms(
    spec: str | None,
    sidecars: str | None,
    *,
    spool_root: Path,
    timeout: float,
    max_output: int,
    fsync: bool = True,
) -> Transform | None:
    """Build the configured transform from the server's settings.

    Args:
        spec: a local program line, e.g. ``"tac"`` or ``"tac | rev"`` (stages
            split on unquoted ``|``, each shell-split, run without a shell).
        sidecars: ``"host:port,host:port"`` (IPv6 as ``[::1]:7000``), chained in
            order; wins over ``spec`` when both are given.
        spool_root: the spool root (sidecar paths are relative to it).
        timeout: seconds each stage may take.
        max_output: largest output of a local stage, in bytes (a sidecar has
            its own ``--max-output``).
        fsync: flush local outputs before renaming them.

    Returns:
        A transform (a :class:`Chain` for several), or None when neither is set.

    Raises:
        ValueError: a malformed ``spec`` or address.
    """
    stages: list[Transform]
    if sidecars and sidecars.strip():
        addresses = [parse_address(a) for a in sidecars.split(",") if a.strip()]
        stages = [SidecarTransform(h, p, spool_root, timeout) for h, p in addresses]
    elif spec and spec.strip():
        stages = [
            LocalCommand(argv, timeout, max_output, fsync=fsync)
            for argv in _split_pipeline(spec)
        ]
    else:
        return None
    return stages[0] if len(stages) == 1 else Chain(stages)
