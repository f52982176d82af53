"""Timing and health of each transform stage, measured from the delivery side.

Theory of operation
-------------------
The ``transform`` package knows nothing of metrics (docs/architecture.md), so
the pipeline wraps each stage of the configured transform in a :class:`Timed`
that measures its ``run`` on the event loop and writes the duration into the
stage's histogram (:class:`~buzon.metrics.histograms.StageSlot`): every
attempt, successful or not. The same wrapper notes the stage's health from the
outcome: a stage that could not be reached (:data:`UNREACHABLE`: refused or
reset connection, no answer in time, program not found) is down from then on; any
answer, its own error reply included, means up. A :class:`~buzon.transform.Chain`
is rebuilt with its stages wrapped, so each is timed alone.

:func:`stage_labels` names the stages the same way in every process (the
supervisor sizes the shared observations file with them): a sidecar by its
``host:port``, a local program by its file name, a repeated name with ``#2``...
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from buzon.metrics.histograms import StageSlot
from buzon.transform import (
    Chain,
    FailureKind,
    LocalCommand,
    SidecarTransform,
    Transform,
    TransformError,
)

__all__ = ["UNREACHABLE", "Timed", "stage_labels", "stages_of", "timed"]

UNREACHABLE = frozenset({FailureKind.DOWN, FailureKind.TIMEOUT, FailureKind.SPAWN})
"""Failure kinds after which a stage counts as down (anything else: it answered)."""


class Timed(Transform):
    """A stage whose every run is timed into ``slot`` and whose outcome sets its health."""

    def __init__(self, inner: Transform, slot: StageSlot) -> None:
        self.inner = inner
        self.slot = slot

    async def run(self, src: Path, dst: Path) -> None:
        start = time.perf_counter()
        try:
            await self.inner.run(src, dst)
        except TransformError as error:
            self.slot.duration.observe(time.perf_counter() - start)
            if error.kind in UNREACHABLE:
                self.slot.unreachable(time.time())
            else:
                self.slot.answered(time.time())
            raise
        self.slot.duration.observe(time.perf_counter() - start)
        self.slot.answered(time.time())

    def __repr__(self) -> str:  # error details name the stage, not the wrapper
        return repr(self.inner)


def stages_of(transform: Transform) -> list[Transform]:
    """The stages of ``transform``: a chain's, or itself."""
    return list(transform.transforms) if isinstance(transform, Chain) else [transform]


def stage_labels(transform: Transform | None) -> list[str]:
    """The ``sidecar`` label of each stage, unique, in order (none without a transform)."""
    if transform is None:
        return []
    labels: list[str] = []
    for stage in stages_of(transform):
        if isinstance(stage, SidecarTransform):
            name = str(stage)
        elif isinstance(stage, LocalCommand):
            name = os.path.basename(stage.argv[0])
        else:
            name = repr(stage)
        label, n = name, 1
        while label in labels:
            n += 1
            label = f"{name}#{n}"
        labels.append(label)
    return labels


def timed(transform: Transform, slots: Sequence[StageSlot]) -> Transform:
    """``transform`` with each stage wrapped in :class:`Timed` (``slots`` in stage order)."""
    stages = stages_of(transform)
    if len(stages) != len(slots):
        raise ValueError(f"{len(stages)} transform stages but {len(slots)} observation slots")
    wrapped = [Timed(stage, slot) for stage, slot in zip(stages, slots, strict=True)]
    return Chain(wrapped) if isinstance(transform, Chain) else wrapped[0]
