"""The soak and sustained computations of ``scripts/bench.py``: pure, clock passed in.

Theory of operation
-------------------
The load generator counts accepted messages per second since it began sending
(its *timeline*; bucket ``i`` is ``[start + i, start + i + 1)``) and announces
that start on the wall clock. The harness, on the same clock, takes a
:class:`Sample` at the end of every minute: the files it found (and removed) in
the Maildirs' ``new/`` since the previous sample, the server tree's RSS and open
descriptors, and Buzón's ``buzon_queue_depth`` when its ``/metrics`` is on.
:func:`minute_rows` lines the two up; :func:`soak_verdict` applies the rules:

- **RSS flat after the first minute**: minutes 2..N are split into an earlier
  and a later half (the earlier one gets the odd minute); the largest RSS of
  the later half is at most 10 % above the largest of the earlier half (a fall
  is fine).
- **Descriptors flat after the first minute**: the same halves; the largest
  count of the later half is at most max(10 %, 50) above the earlier half's.

Halves rather than one reference minute, because one sample a minute catches
the server at a random point of bounded swings (a delivery batch holds up to
768 descriptors while it is written; sessions reconnect): a leak or a growing
queue raises the later half above anything the earlier half saw, a swing does
not. (A first version compared with minute 2 alone, and a 10-minute run failed
on 158 -> 222 descriptors with 127 and 16 in the last two minutes.)
- **Delivery keeps up**: in every minute 1..N, ``|delivered - accepted| <=
  10 % of accepted`` (and something was accepted).

Minute 1 is left out of the flatness rules: it holds the warm-up (caches,
buffers, the first files of each mailbox). With fewer than 2 minutes there is
nothing to call flat: those two verdicts are ``None`` ("not measured").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Sample", "minute_rows", "soak_table", "soak_verdict", "window_rate"]

TOLERANCE = 0.10
FD_SLACK = 50


@dataclass(frozen=True)
class Sample:
    """What the harness saw at the end of one minute."""

    at: float
    """Wall-clock time of the sample (``time.time()``)."""
    delivered: int
    """Files that appeared in ``new/`` since the previous sample."""
    rss: int
    """Bytes resident, summed over the server's process tree."""
    fds: int
    """Open descriptors, summed over the server's process tree."""
    queue_metric: float | None = None
    """Buzón's ``buzon_queue_depth`` at the sample, when its /metrics is on."""


def minute_rows(timeline: list[int], samples: list[Sample], start: float,
                minute: float = 60.0) -> list[dict]:
    """One row per minute: accepted and delivered (counts and per second), queue depth.

    Args:
        timeline: accepted per second since ``start`` (the generator's).
        samples: one per minute, in order; ``samples[k]`` ends minute ``k + 1``.
        start: when the generator began sending, on the samples' clock.

    Returns:
        Rows with ``minute``, ``accepted``, ``delivered``, ``accepted_per_s``,
        ``delivered_per_s``, ``queue_depth`` (accepted − delivered so far),
        ``queue_metric``, ``rss_mb``, ``fds``. Messages accepted after the last
        minute (finished past the deadline) belong to no row.
    """
    rows = []
    seconds = round(minute)
    total_accepted = total_delivered = 0
    previous = start
    for k, sample in enumerate(samples):
        accepted = sum(timeline[k * seconds:(k + 1) * seconds])
        total_accepted += accepted
        total_delivered += sample.delivered
        span = max(sample.at - previous, 1e-9)
        previous = sample.at
        rows.append({
            "minute": k + 1,
            "accepted": accepted,
            "delivered": sample.delivered,
            "accepted_per_s": round(accepted / minute, 1),
            "delivered_per_s": round(sample.delivered / span, 1),
            "queue_depth": total_accepted - total_delivered,
            "queue_metric": sample.queue_metric,
            "rss_mb": round(sample.rss / 2**20, 1),
            "fds": sample.fds,
        })
    return rows


def _halves(values: list[float]) -> tuple[list[float], list[float]]:
    """Minutes 2..N as (earlier half, later half); the earlier gets the odd minute."""
    after = values[1:]
    middle = (len(after) + 1) // 2
    return after[:middle], after[middle:]


def _flat(values: list[float], allowed) -> bool | None:
    earlier, later = _halves(values)
    if not later:
        return None
    return max(later) <= max(earlier) + allowed(max(earlier))


def soak_verdict(rows: list[dict]) -> dict:
    """The three rules of the module docstring over ``rows`` from :func:`minute_rows`."""
    rss = [r["rss_mb"] for r in rows]
    fds = [r["fds"] for r in rows]
    keeps_up = [r["minute"] for r in rows
                if not (r["accepted"] > 0
                        and abs(r["delivered"] - r["accepted"]) <= TOLERANCE * r["accepted"])]
    return {
        "rss_flat": _flat(rss, lambda v: TOLERANCE * v),
        "fds_flat": _flat(fds, lambda v: max(TOLERANCE * v, FD_SLACK)),
        "delivered_keeps_up": not keeps_up if rows else None,
        "minutes_behind": keeps_up,
        "rss_mb_earlier": max(_halves(rss)[0], default=None),
        "rss_mb_later": max(_halves(rss)[1], default=None),
        "fds_earlier": max(_halves(fds)[0], default=None),
        "fds_later": max(_halves(fds)[1], default=None),
    }


def _word(value: bool | None) -> str:
    return "not measured (fewer than 3 minutes)" if value is None else (
        "PASS" if value else "FAIL")


def verdict_lines(name: str, v: dict) -> list[str]:
    """The verdict as the lines the harness prints (and the targets list)."""
    keeps_up = (_word(v["delivered_keeps_up"]) if v["delivered_keeps_up"] is not False else
                f"FAIL (minutes {', '.join(map(str, v['minutes_behind']))})")
    return [
        (f"soak {name}: RSS flat after the first minute (max of the later half of minutes "
         f"2..N ≤ max of the earlier half + 10 %): {v['rss_mb_earlier']} → "
         f"{v['rss_mb_later']} MB → {_word(v['rss_flat'])}"),
        (f"soak {name}: descriptors flat after the first minute (the same halves, + max(10 %, "
         f"50)): {v['fds_earlier']} → {v['fds_later']} → {_word(v['fds_flat'])}"),
        f"soak {name}: delivered within 10 % of accepted in every minute: {keeps_up}",
    ]


def soak_table(name: str, rows: list[dict], drain: dict | None = None) -> str:
    """The per-minute table of one soak run, in Markdown."""
    lines = [
        f"soak, {name}: per minute",
        "",
        ("| minute | accepted/s | delivered/s | queue depth (accepted − delivered) "
         "| buzon_queue_depth | RSS MB | open fds |"),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        metric = "–" if r["queue_metric"] is None else f"{r['queue_metric']:,.0f}"
        lines.append(f"| {r['minute']} | {r['accepted_per_s']:,.1f} | {r['delivered_per_s']:,.1f} "
                     f"| {r['queue_depth']:,} | {metric} | {r['rss_mb']:,.1f} | {r['fds']:,} |")
    if drain:
        lines.append("")
        lines.append(f"after the last minute: {drain['late_accepted']:,} accepted after it; "
                     f"{drain['delivered']:,} of {drain['accepted']:,} accepted delivered in all, "
                     f"the last {drain['seconds']:.1f} s after the last minute"
                     + ("" if drain["complete"] else " (NOT ALL: timed out)"))
    return "\n".join(lines)


def window_rate(first: int, last: int, span: float) -> float | None:
    """Files delivered per second between two counts ``span`` seconds apart."""
    return round((last - first) / span, 1) if span > 0 else None


def as_dict(sample: Sample) -> dict:
    return asdict(sample)
