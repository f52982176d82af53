"""What a transform is: the :class:`Transform` interface every kind of transform implements.

Theory of operation
-------------------
A transform turns one message file into another: ``await t.run(src, dst)``
reads ``src`` and leaves the result in ``dst``, which appears atomically (the
bytes go to ``dst.tmp``, are flushed to disk, then renamed), so a reader never
sees half a message and a crash leaves either the whole output or none. On
failure ``run`` raises :class:`~buzon.transform.failures.TransformError`, and
``dst`` is not created. The implementations are
:class:`~buzon.transform.command.LocalCommand` (a program run here),
:class:`~buzon.transform.client.SidecarTransform` (a program run by a sidecar)
and :class:`~buzon.transform.runner.Chain` (several in order). The delivery
worker needs only this method.
"""

from __future__ import annotations

import abc
from pathlib import Path

__all__ = ["Transform"]


class Transform(abc.ABC):
    """One way of turning a message file into another."""

    @abc.abstractmethod
    async def run(self, src: Path, dst: Path) -> None:
        """Transform the message in ``src``, leaving the result in ``dst`` atomically.

        Raises:
            TransformError: the transform failed; ``dst`` was not created.
        """
