"""Running a program on a message file: the one place Buzón starts a transform program.

Theory of operation
-------------------
:func:`run_command` runs a program for :class:`LocalCommand` (a child of the
smtp process) and for the sidecar server (:mod:`buzon.transform.sidecar_server`)
alike: stdin is the input file, stdout is copied to ``dst.tmp`` with a byte cap,
flushed and renamed to ``dst`` (so a reader never sees half a message), and
stderr's first bytes are kept for the error detail. The program gets its own
process group (``start_new_session``), so a kill on timeout or oversize also
reaches whatever it forked (``sh -c``, pipelines). Failures are
:class:`~buzon.transform.failures.TransformError` of kind ``timeout``, ``oversize``,
``exit``, ``spawn`` or ``internal``; the temporary file never survives one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from buzon.transform.base import Transform
from buzon.transform.failures import FailureKind, TransformError

__all__ = ["LocalCommand", "run_command"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
_STDERR_KEEP = 300  # bytes of stderr quoted in an "exit" detail
_DRAIN = 2.0  # seconds a killed program's pipes get to close


async def run_command(
    argv: Sequence[str],
    src: Path,
    dst: Path,
    *,
    timeout: float,
    max_output: int,
    fsync: bool = True,
    exclusive: bool = False,
) -> int:
    """Run ``argv`` with ``src`` on stdin; its stdout becomes ``dst``, atomically.

    Args:
        argv: the program and its arguments (no shell).
        src: the input file (a symlink as its last component is refused).
        dst: the output file; written as ``dst.tmp``, flushed, then renamed.
        timeout: seconds the whole run may take.
        max_output: largest output allowed, in bytes.
        fsync: flush the output to disk before the rename.
        exclusive: never replace a file (the sidecar): ``dst.tmp`` must not exist
            and is linked to ``dst``, which fails if ``dst`` appeared meanwhile.

    Returns:
        The size of the output in bytes.

    Raises:
        TransformError: kinds ``timeout``, ``oversize``, ``exit``, ``spawn``,
            ``internal`` (``path`` when ``exclusive`` finds a file in the way);
            ``dst`` is untouched and the temporary file removed.
    """
    name = os.path.basename(argv[0])
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        stdin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise TransformError(
            FailureKind.INTERNAL, f"cannot read {src.name}: {error.strerror}"
        ) from None
    try:
        # O_NOFOLLOW: a symlink planted at the temporary name cannot redirect the write.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        out_fd = os.open(tmp, flags | (os.O_EXCL if exclusive else 0), 0o666)
    except OSError as error:
        os.close(stdin)
        kind = FailureKind.PATH if error.errno == errno.EEXIST else FailureKind.INTERNAL
        raise TransformError(kind, f"cannot write {tmp.name}: {error.strerror}") from None
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
                raise TransformError(
                    FailureKind.INTERNAL, f"cannot write the output: {error}"
                ) from None
        if exclusive:
            _link_new(tmp, dst)
        else:
            os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if exclusive:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return size


def _link_new(tmp: Path, dst: Path) -> None:
    """Put ``tmp`` at ``dst`` only if nothing is there: link(2) never replaces a file."""
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise TransformError(
            FailureKind.PATH, f"{dst.name} appeared during the run; not replaced"
        ) from None
    except OSError as error:
        raise TransformError(
            FailureKind.INTERNAL, f"cannot put {dst.name} in place: {error.strerror}"
        ) from None


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
        raise TransformError(FailureKind.SPAWN, f"program not found: {argv[0]!r}") from None
    except PermissionError:
        raise TransformError(FailureKind.SPAWN, f"program not executable: {argv[0]!r}") from None
    except OSError as error:
        raise TransformError(FailureKind.SPAWN, f"cannot start {argv[0]!r}: {error}") from None


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
        raise TransformError(
            FailureKind.TIMEOUT, f"{name} ran past {timeout:g} s; killed"
        ) from None
    except _Oversize:
        await _kill(proc, stderr)
        raise TransformError(
            FailureKind.OVERSIZE, f"{name} wrote more than {limit} bytes; killed"
        ) from None
    except OSError as error:  # writing the output (disk full...)
        await _kill(proc, stderr)
        raise TransformError(FailureKind.INTERNAL, f"cannot write the output: {error}") from None
    except BaseException:  # cancelled: the program must not outlive its caller
        await _kill(proc, stderr)
        raise
    if returncode != 0:
        text = " ".join(head.decode("utf-8", "replace").split())
        how = (f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0
               else f"exited with status {returncode}")
        raise TransformError(FailureKind.EXIT, f"{name} {how}" + (f": {text}" if text else ""))
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
