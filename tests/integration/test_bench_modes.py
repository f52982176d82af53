"""``scripts/bench.py``'s sustained, soak and 10 MB modes: the pure per-minute rules on
synthetic samples, and short real runs of the harness against a real Buzón."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
from benchlib.soak import Sample, minute_rows, soak_verdict, verdict_lines

BENCH = REPO / "scripts" / "bench.py"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="bench.py runs as root")


def _rows(rss: list[float], fds: list[int], accepted: list[int], delivered: list[int]) -> list:
    return [{"minute": i + 1, "rss_mb": r, "fds": f, "accepted": a, "delivered": d}
            for i, (r, f, a, d) in enumerate(zip(rss, fds, accepted, delivered, strict=True))]


def test_minute_rows_line_up_the_timeline_with_the_samples() -> None:
    start = 1000.0
    # 3 minutes: 10/s, then 20/s, then 30/s; 7 messages finished after the deadline
    timeline = [10] * 60 + [20] * 60 + [30] * 60 + [7]
    samples = [Sample(start + 60, 540, 100 << 20, 300, 60.0),
               Sample(start + 120.5, 1206, 110 << 20, 310, None),
               Sample(start + 180, 1785, 111 << 20, 305, 20.0)]
    rows = minute_rows(timeline, samples, start)
    assert [r["accepted"] for r in rows] == [600, 1200, 1800]
    assert [r["accepted_per_s"] for r in rows] == [10.0, 20.0, 30.0]
    assert [r["delivered"] for r in rows] == [540, 1206, 1785]
    # over the time between samples: 1206 / 60.5 s, 1785 / 59.5 s
    assert [r["delivered_per_s"] for r in rows] == [9.0, 19.9, 30.0]
    assert [r["queue_depth"] for r in rows] == [60, 54, 69]  # accepted − delivered so far
    assert [r["queue_metric"] for r in rows] == [60.0, None, 20.0]
    assert [(r["rss_mb"], r["fds"]) for r in rows] == [(100.0, 300), (110.0, 310), (111.0, 305)]
    # minutes of any length (a smoke run's 5 s "minutes")
    short = minute_rows([1, 2, 3, 4, 5, 6], [Sample(3, 6, 0, 0), Sample(6, 15, 0, 0)], 0, 3)
    assert [(r["accepted"], r["accepted_per_s"], r["delivered_per_s"]) for r in short] == [
        (6, 2.0, 2.0), (15, 5.0, 5.0)]


@pytest.mark.parametrize(("rss", "fds", "flat"), [
    ([300, 150, 160, 165], [900, 200, 250, 240], (True, True)),   # minute 1 is not judged
    ([100, 150, 165.1], [200, 200, 251], (False, False)),         # +10.07 %; +51 fds
    ([100, 1000, 1100], [1000, 1000, 1100], (True, True)),        # +10 %; 10 % beats 50
    ([100, 1000, 900], [1000, 1000, 1101], (True, False)),        # a fall is flat
    # a 10-minute soak's bounded swings (a delivery batch's open files) are flat...
    ([92.8, 96.5, 100.0, 97.3, 98.7, 96.4, 95.5, 100.5, 93.8, 96.2],
     [133, 158, 222, 143, 172, 125, 156, 193, 127, 16], (True, True)),
    # ...steady growth is not, even when each step is small
    ([90, 100, 104, 108, 112, 116, 120], [100, 200, 230, 260, 290, 320, 350], (False, False)),
])
def test_flat_means_the_later_half_within_10_percent_or_50_fds_of_the_earlier_half(
    rss: list[float], fds: list[int], flat: tuple[bool, bool],
) -> None:
    n = len(rss)
    verdict = soak_verdict(_rows(rss, fds, [100] * n, [100] * n))
    assert (verdict["rss_flat"], verdict["fds_flat"]) == flat
    assert verdict["delivered_keeps_up"] is True


def test_delivered_within_10_percent_of_accepted_in_every_minute() -> None:
    def verdict(accepted: list[int], delivered: list[int]) -> dict:
        n = len(accepted)
        return soak_verdict(_rows([1.0] * n, [1] * n, accepted, delivered))

    assert verdict([1000, 1000], [900, 1100])["delivered_keeps_up"] is True
    behind = verdict([1000, 1000, 1000], [899, 1000, 1101])
    assert (behind["delivered_keeps_up"], behind["minutes_behind"]) == (False, [1, 3])
    assert verdict([0, 10], [0, 10])["minutes_behind"] == [1]  # nothing accepted: not kept up
    one = verdict([10], [10])
    assert (one["rss_flat"], one["fds_flat"], one["delivered_keeps_up"]) == (None, None, True)
    lines = verdict_lines("buzon", behind)
    assert lines[2].endswith("FAIL (minutes 1, 3)") and "PASS" in lines[0]


def _bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--no-postfix", "--repeat", "1", "--json", str(out), *args],
        capture_output=True, text=True, timeout=150, check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@root_only
def test_bench_soak_reports_every_minute_and_a_verdict(tmp_path: Path) -> None:
    # 3 "minutes" of 4 s: the harness's whole soak path in ~20 s
    data = _bench(tmp_path, "--only", "soak", "--quick", "--soak-minutes", "3",
                  "--soak-minute", "4")
    soak = data["results"]["soak"]["buzon"]
    rows, drain = soak["minutes"], soak["drain"]
    assert [r["minute"] for r in rows] == [1, 2, 3]
    accepted = soak["ok"]
    assert accepted > 0 and soak["errors"] == 0
    assert sum(r["accepted"] for r in rows) + drain["late_accepted"] == accepted
    assert drain["complete"] and drain["delivered"] == accepted
    assert sum(r["delivered"] for r in rows) <= accepted
    assert all(r["rss_mb"] > 10 and r["fds"] > 20 for r in rows)
    assert all(r["queue_metric"] is not None for r in rows)  # /metrics was on and read
    # the mix: all three sizes were sent
    assert set(data["runs"][0]["load"]["by_size"]) == {"4096", "102400", "2097152"}
    assert set(soak["verdict"]) >= {"rss_flat", "fds_flat", "delivered_keeps_up"}
    assert [line.split(":")[0] for line in data["targets16"]] == ["soak buzon"] * 3


@root_only
def test_bench_duration_and_big_messages(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--only", "1k,10m", "--quick", "--duration", "4")
    one = data["runs"][0]
    assert (one["workload"], data["workloads"]["1k"]["duration"]) == ("1k", 4.0)
    assert one["load"]["duration"] == 4.0 and len(one["load"]["timeline"]) >= 4
    assert one["window"]["from_s"] == 2.0 and one["window"]["last"] > one["window"]["first"]
    assert one["sustained_per_s"] > 0 and one["load"]["delivered"] == one["load"]["ok"]
    big = data["results"]["10m"]["buzon"]
    assert (big["ok"], big["delivered"], big["errors"]) == (10, 10, 0)
    assert big["rss_mb"] > 0 and data["workloads"]["10m"]["sample"] == 0.1
    assert any(line.startswith("10m: 100 concurrent") for line in data["targets16"])
