"""Observations: delivery-delay and transform-duration histograms, and per-stage health.

Theory of operation
-------------------
A histogram here is a row of integer words: one per bucket of fixed
boundaries (:data:`DELAY_BOUNDS`, :data:`TRANSFORM_BOUNDS`, plus ``+Inf``),
then the sum of the observations in microseconds. An observation
(:meth:`Histogram.observe`) is a C-level ``bisect`` and two integer additions
to the writer's own words: no lock, no allocation, on the event loop that
delivers. Buckets are kept *non*-cumulative and summed at read time, so the
``_count`` a reader sees is always the sum of its buckets (the ``+Inf``
cumulative bucket) even when it reads in the middle of a writer's
observation, and every cumulative bucket is monotonic by construction.

Each writer owns one *slot*: the delay histogram, the time the oldest message
it holds was received (a gauge, written by the delivery pipeline once a
second), and per transform stage (a sidecar or a local program, labelled) a
duration histogram and three health words: when it last answered, when it last
failed to (refused connection, timeout, program not found), and when it first
failed since it last answered. With ``BUZON_WORKERS`` > 1 the slots live in a
file mapped by every process (``<data_dir>/workers.observations``, created by
the supervisor at each start, as :mod:`buzon.metrics.shared` does for the
counters); a single process keeps one slot in memory. :meth:`Observations.read`
sums the slots (histograms), takes the minimum (oldest message) and the most
recent news (health). Health is thus what the last transform attempts said,
not a probe: a sidecar nobody asked for work since it stopped still reads up.

Histograms describe this run only (not persisted), as Prometheus expects of a
process that restarted; its ``rate()`` handles the reset.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DELAY_BOUNDS", "TRANSFORM_BOUNDS", "Health", "Histogram", "HistogramTotals",
    "ObservationSlot", "ObservationTotals", "Observations", "StageSlot", "StageTotals",
]

DELAY_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds, inclusive) of the delivery-delay buckets: 250 → file in ``new/``."""
TRANSFORM_BOUNDS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds, inclusive) of the transform-duration buckets, per stage."""

_MAGIC = b"BUZONOBS"
_HEADER = struct.Struct("<8sIIII8x")  # magic, version, slots, stages, crc32 of the labels
_HEADER_WORDS = 4
_VERSION = 1
_HEALTH_WORDS = 3  # last ok, last down, first down since the last ok (ms since the epoch)


def _hist_words(bounds: Sequence[float]) -> int:
    return len(bounds) + 2  # the buckets, +Inf, the sum in microseconds


class Histogram:
    """The writer's view of one histogram in its slot."""

    __slots__ = ("_base", "_bounds", "_sum", "_words")

    def __init__(self, words: memoryview, base: int, bounds: tuple[float, ...]) -> None:
        self._words, self._base, self._bounds = words, base, bounds
        self._sum = base + len(bounds) + 1

    def observe(self, seconds: float) -> None:
        """Count one observation (the hot path: a bisect and two integer additions)."""
        words = self._words
        # bisect_left: the first bound >= seconds, i.e. Prometheus's "le" bucket.
        words[self._base + bisect_left(self._bounds, seconds)] += 1
        words[self._sum] += int(seconds * 1_000_000)


class StageSlot:
    """One transform stage in one slot: its duration histogram and health words."""

    __slots__ = ("_health", "_words", "duration", "label")

    def __init__(self, words: memoryview, base: int, label: str) -> None:
        self.label = label
        self.duration = Histogram(words, base, TRANSFORM_BOUNDS)
        self._words = words
        self._health = base + _hist_words(TRANSFORM_BOUNDS)

    def answered(self, now: float) -> None:
        """The stage answered (a result or its own error): it is up."""
        h = self._health
        self._words[h] = int(now * 1000)
        self._words[h + 2] = 0

    def unreachable(self, now: float) -> None:
        """The stage could not be reached (refused, timed out, not found): it is down."""
        h, ms = self._health, int(now * 1000)
        self._words[h + 1] = ms
        if not self._words[h + 2]:
            self._words[h + 2] = ms


class ObservationSlot:
    """What one process writes: the delay histogram, the oldest message, each stage."""

    __slots__ = ("_oldest", "_words", "delay", "stages")

    def __init__(self, words: memoryview, base: int, labels: Sequence[str]) -> None:
        self._words = words
        self.delay = Histogram(words, base, DELAY_BOUNDS)
        self._oldest = base + _hist_words(DELAY_BOUNDS)
        first = self._oldest + 1
        step = _hist_words(TRANSFORM_BOUNDS) + _HEALTH_WORDS
        self.stages = tuple(StageSlot(words, first + i * step, label)
                            for i, label in enumerate(labels))

    def set_oldest(self, received: float | None) -> None:
        """When the oldest message this process holds was received (None: it holds none)."""
        self._words[self._oldest] = 0 if received is None else max(int(received * 1000), 1)


@dataclass(frozen=True, slots=True)
class HistogramTotals:
    """One histogram summed over every slot."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    """Observations per bucket (not cumulative); the last is the ``+Inf`` bucket."""
    sum: float
    """Sum of the observations, in seconds."""

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count)`` pairs, ``le`` ending with ``inf``: Prometheus's buckets."""
        out, running = [], 0
        for le, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((le, running))
        return out

    def quantile(self, q: float) -> float | None:
        """The bucket bound under which ``q`` of the observations fall (None if empty)."""
        total = self.count
        if not total:
            return None
        for le, running in self.cumulative():
            if running >= q * total:
                return le
        return float("inf")  # pragma: no cover - the last bucket holds every observation


@dataclass(frozen=True, slots=True)
class Health:
    """What the last transform attempts said of a stage."""

    up: bool | None
    """True after an answer, False after a failure to reach it, None before any attempt."""
    down_since: float | None
    """When it first failed to answer since its last answer (seconds since the epoch)."""


@dataclass(frozen=True, slots=True)
class StageTotals:
    label: str
    duration: HistogramTotals
    health: Health


@dataclass(frozen=True, slots=True)
class ObservationTotals:
    delay: HistogramTotals
    oldest_received: float | None
    """When the oldest queued message was received (None: nothing queued)."""
    stages: tuple[StageTotals, ...]


class Observations:
    """Every slot: one in memory (:meth:`private`) or one per worker in a mapped file."""

    def __init__(self, buffer: mmap.mmap | bytearray, slots: int, labels: Sequence[str]) -> None:
        self._buffer = buffer
        self._words = memoryview(buffer).cast("q")
        self.slots = slots
        self.labels = tuple(labels)
        self._stride = _slot_words(len(self.labels))

    @classmethod
    def private(cls, labels: Sequence[str]) -> Observations:
        """One slot, in this process's memory (the single-process server)."""
        return cls(bytearray((_HEADER_WORDS + _slot_words(len(labels))) * 8), 1, labels)

    @classmethod
    def shared(cls, path: Path, slots: int, labels: Sequence[str], *,
               create: bool) -> Observations:
        """The mapped file of ``slots`` workers; ``create`` (the supervisor) makes it anew.

        Raises:
            ValueError: the file is not one for these slots and stage labels.
        """
        size = (_HEADER_WORDS + slots * _slot_words(len(labels))) * 8
        crc = zlib.crc32("\n".join(labels).encode())
        if create:
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, _VERSION, slots, len(labels), crc).ljust(size, b"\0"))
            os.replace(tmp, path)  # a worker never maps half a file
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != size:
                raise ValueError(f"{path} does not hold {slots} observation slots")
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if _HEADER.unpack_from(mapped) != (_MAGIC, _VERSION, slots, len(labels), crc):
            mapped.close()
            raise ValueError(f"{path} is not a Buzón observations file for these workers")
        return cls(mapped, slots, labels)

    def slot(self, index: int) -> ObservationSlot:
        if not 0 <= index < self.slots:
            raise IndexError(f"no observation slot {index}")
        return ObservationSlot(self._words, _HEADER_WORDS + index * self._stride, self.labels)

    def worker_died(self, index: int) -> None:
        """Its queue is recovered, and counted again, by its successor."""
        self.slot(index).set_oldest(None)

    def read(self) -> ObservationTotals:
        """Every slot summed, now."""
        words = self._words
        bases = [_HEADER_WORDS + i * self._stride for i in range(self.slots)]

        def hist(offset: int, bounds: tuple[float, ...]) -> HistogramTotals:
            n = len(bounds) + 1
            counts = tuple(sum(words[b + offset + k] for b in bases) for k in range(n))
            micros = sum(words[b + offset + n] for b in bases)
            return HistogramTotals(bounds, counts, micros / 1_000_000)

        oldest_at = _hist_words(DELAY_BOUNDS)
        oldest = [words[b + oldest_at] for b in bases if words[b + oldest_at]]
        step = _hist_words(TRANSFORM_BOUNDS) + _HEALTH_WORDS
        stages = []
        for i, label in enumerate(self.labels):
            at = oldest_at + 1 + i * step
            h = at + _hist_words(TRANSFORM_BOUNDS)
            stages.append(StageTotals(label, hist(at, TRANSFORM_BOUNDS), _health(
                [(words[b + h], words[b + h + 1], words[b + h + 2]) for b in bases])))
        return ObservationTotals(hist(0, DELAY_BOUNDS),
                                 min(oldest) / 1000 if oldest else None, tuple(stages))

    def close(self) -> None:
        self._words.release()
        if isinstance(self._buffer, mmap.mmap):
            self._buffer.close()


def _slot_words(stages: int) -> int:
    return _hist_words(DELAY_BOUNDS) + 1 + stages * (_hist_words(TRANSFORM_BOUNDS) + _HEALTH_WORDS)


def _health(per_slot: Sequence[tuple[int, int, int]]) -> Health:
    """The most recent news of a stage over every writer: up or down, and down since when."""
    last_ok = max(ok for ok, _, _ in per_slot)
    last_down = max(down for _, down, _ in per_slot)
    if not (last_ok or last_down):
        return Health(None, None)
    if last_ok >= last_down:
        return Health(True, None)
    # A slot's first failure may predate another slot's answer; then its latest
    # failure is the earliest of its own known to follow that answer.
    since = [first if first > last_ok else down
             for _, down, first in per_slot if down > last_ok]
    return Health(False, min(since) / 1000)
