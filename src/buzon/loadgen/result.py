"""What one run of ``buzon-load`` measured, and its JSON summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["LoadResult"]


@dataclass
class LoadResult:
    """What a run measured."""

    mode: str
    sessions: int
    sent: int = 0
    """Messages accepted (final ``250``), or ``NOOP``\\s answered in hold mode."""
    errors: int = 0
    seconds: float = 0.0
    """From the first connection to the last session's end (the sending window)."""
    latencies: list[float] = field(default_factory=list)
    delivered: int | None = None
    deliver_seconds: float | None = None
    first_errors: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    """Deferrals (4xx replies) by reply code, e.g. ``{"452": 3, "421": 1}``."""
    first_refusals: list[str] = field(default_factory=list)
    timeline: list[int] = field(default_factory=list)
    """Messages accepted in each second since ``started``: ``timeline[i]`` is [i, i+1)."""
    by_size: dict[int, int] = field(default_factory=dict)
    """Messages accepted per message size (``--mix``)."""
    started: float = 0.0
    """``time.perf_counter()`` when sending began; ``started_at`` is the same instant."""
    started_at: float = 0.0
    """``time.time()`` when sending began (epoch seconds: lines up with other clocks)."""
    duration: float | None = None

    def begin(self) -> None:
        self.started, self.started_at = time.perf_counter(), time.time()

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)

    def refusal(self, line: str) -> None:
        code = line[:3]
        self.refused[code] = self.refused.get(code, 0) + 1
        if len(self.first_refusals) < 5 and line not in self.first_refusals:
            self.first_refusals.append(line)

    def accepted(self, size: int, latency: float, now: float) -> None:
        self.sent += 1
        self.latencies.append(latency)
        self.by_size[size] = self.by_size.get(size, 0) + 1
        second = max(0, int(now - self.started))
        if second >= len(self.timeline):
            self.timeline.extend([0] * (second + 1 - len(self.timeline)))
        self.timeline[second] += 1

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)) if lat else (
            lambda q: None
        )
        out: dict[str, object] = {
            "mode": self.mode,
            "sessions": self.sessions,
            "ok": self.sent,
            "errors": self.errors,
            "refused": dict(sorted(self.refused.items())),
            "refused_total": sum(self.refused.values()),
            "seconds": round(self.seconds, 3),
            "msgs_per_s": round(self.sent / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }
        if self.mode == "send":
            out["started_at"] = round(self.started_at, 3)
            out["duration"] = self.duration
            out["by_size"] = {str(k): v for k, v in sorted(self.by_size.items())}
            out["timeline"] = list(self.timeline)
        if self.delivered is not None:
            out["delivered"] = self.delivered
            out["delivered_per_s"] = (
                round(self.delivered / self.deliver_seconds, 1) if self.deliver_seconds else None
            )
        if self.first_errors:
            out["first_errors"] = self.first_errors
        if self.first_refusals:
            out["first_refusals"] = self.first_refusals
        return out
