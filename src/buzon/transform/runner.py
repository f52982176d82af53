"""The configured transform: settings in, one :class:`Transform` (or a :class:`Chain`) out.

Theory of operation
-------------------
The server asks :func:`build_transforms` once, at start, for what its settings
name: a list of sidecar addresses (``BUZON_TRANSFORM_SIDECARS``, each a
:class:`~buzon.transform.client.SidecarTransform`) or else a local program line
(``BUZON_TRANSFORM``, each ``|``-separated stage a
:class:`~buzon.transform.command.LocalCommand`, run without a shell). Several
stages make a :class:`Chain`: each stage's output is the next one's input, in
files next to ``dst`` named ``<dst>.stage<N>`` (so inside the work area when
``dst`` is, and files of the same job, as sidecars require), removed before the
run (a sidecar never replaces a file) and whatever happens after it. A failing stage's
:class:`~buzon.transform.failures.TransformError` passes up with its kind and
retryability, its detail prefixed with the stage. What a transform is and how
it fails: :mod:`buzon.transform.base`, :mod:`buzon.transform.failures`.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Sequence
from pathlib import Path

from buzon.net import parse_address
from buzon.transform.base import Transform
from buzon.transform.client import SidecarTransform
from buzon.transform.command import LocalCommand
from buzon.transform.failures import TransformError

__all__ = ["Chain", "build_transforms"]


class Chain(Transform):
    """Several transforms in order; intermediate files sit next to ``dst``."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        if not transforms:
            raise ValueError("a chain needs at least one transform")
        self.transforms = list(transforms)

    async def run(self, src: Path, dst: Path) -> None:
        n = len(self.transforms)
        # Next to dst, so they are inside the work area when dst is (sidecars).
        between = [dst.with_name(f"{dst.name}.stage{i}") for i in range(1, n)]
        _remove(between)  # leftovers of an earlier attempt: a sidecar would refuse them
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
            _remove(between)

    def __repr__(self) -> str:
        return "Chain(" + " | ".join(repr(t) for t in self.transforms) + ")"


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        for name in (path, path.with_name(path.name + ".tmp")):
            with contextlib.suppress(OSError):
                name.unlink(missing_ok=True)


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
    work_root: Path,
    timeout: float,
    max_output: int,
    fsync: bool = True,
    key: bytes | None = None,
) -> Transform | None:
    """Build the configured transform from the server's settings.

    Args:
        spec: a local program line, e.g. ``"tac"`` or ``"tac | rev"`` (stages
            split on unquoted ``|``, each shell-split, run without a shell).
        sidecars: ``"host:port,host:port"`` (IPv6 as ``[::1]:7000``), chained in
            order; wins over ``spec`` when both are given.
        work_root: the work area's root (sidecar paths are relative to it).
        timeout: seconds each stage may take.
        max_output: largest output of a local stage, in bytes (a sidecar has
            its own ``--max-output``).
        fsync: flush local outputs before renaming them.
        key: the deployment key, required with ``sidecars`` (a local program needs none).

    Returns:
        A transform (a :class:`Chain` for several), or None when neither is set.

    Raises:
        ValueError: a malformed ``spec`` or address, or sidecars without a key.
    """
    stages: list[Transform]
    if sidecars and sidecars.strip():
        addresses = [parse_address(a) for a in sidecars.split(",") if a.strip()]
        if key is None:
            raise ValueError("sidecars need the deployment key (the key file setting)")
        stages = [SidecarTransform(h, p, work_root, timeout, key=key) for h, p in addresses]
    elif spec and spec.strip():
        stages = [
            LocalCommand(argv, timeout, max_output, fsync=fsync)
            for argv in _split_pipeline(spec)
        ]
    else:
        return None
    return stages[0] if len(stages) == 1 else Chain(stages)
