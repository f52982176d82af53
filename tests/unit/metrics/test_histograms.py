"""Histograms, the oldest message and stage health, in memory and across mapped slots."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from buzon.metrics import Counters
from buzon.metrics.histograms import DELAY_BOUNDS, TRANSFORM_BOUNDS, Health, Observations, _health
from buzon.observe import registry_for, render

# (observation in seconds, index of the bucket it must land in; len(bounds) is +Inf)
DELAY_CASES = [
    (0.0, 0), (0.005, 0), (0.0051, 1), (0.01, 1), (0.2, 5), (1.0, 7), (1.0001, 8),
    (300.0, len(DELAY_BOUNDS) - 1), (300.5, len(DELAY_BOUNDS)), (86400.0, len(DELAY_BOUNDS)),
]


@pytest.mark.parametrize(("seconds", "bucket"), DELAY_CASES)
def test_an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed(
    seconds: float, bucket: int
) -> None:
    obs = Observations.private([])
    obs.slot(0).delay.observe(seconds)
    got = obs.read().delay
    assert got.counts == tuple(int(i == bucket) for i in range(len(DELAY_BOUNDS) + 1))
    assert got.count == 1
    assert got.sum == pytest.approx(seconds, abs=1e-6)


def test_cumulative_buckets_are_monotonic_and_end_with_the_count() -> None:
    obs = Observations.private(["tac"])
    slot = obs.slot(0)
    for seconds, _ in DELAY_CASES:
        slot.delay.observe(seconds)
    for seconds in (0.001, 0.3, 0.3, 7.0, 100.0):
        slot.stages[0].duration.observe(seconds)
    seen = obs.read()
    for hist in (seen.delay, seen.stages[0].duration):
        pairs = hist.cumulative()
        assert [c for _, c in pairs] == sorted(c for _, c in pairs)
        assert pairs[-1] == (float("inf"), hist.count)
    assert seen.stages[0].duration.count == 5
    assert seen.stages[0].duration.quantile(0.5) == 0.5
    assert seen.stages[0].duration.bounds == TRANSFORM_BOUNDS


def test_slots_in_a_mapped_file_are_summed_and_the_oldest_is_the_minimum(tmp_path: Path) -> None:
    path = tmp_path / "workers.observations"
    owner = Observations.shared(path, 3, ["a:1", "tac"], create=True)
    workers = [Observations.shared(path, 3, ["a:1", "tac"], create=False) for _ in range(3)]
    try:
        for i, worker in enumerate(workers):
            slot = worker.slot(i)
            for _ in range(i + 1):
                slot.delay.observe(0.02)
                slot.stages[1].duration.observe(2.0)
            slot.set_oldest(1000.0 + i)
        seen = owner.read()
        assert seen.delay.count == 6 and seen.delay.sum == pytest.approx(0.12)
        assert seen.stages[1].duration.count == 6 and seen.stages[0].duration.count == 0
        assert seen.oldest_received == 1000.0
        owner.worker_died(0)
        assert owner.read().oldest_received == 1001.0
        with pytest.raises(ValueError, match="does not hold"):
            Observations.shared(path, 2, ["a:1", "tac"], create=False)
        with pytest.raises(ValueError, match="not a Buzón observations file"):
            Observations.shared(path, 3, ["b:1", "tac"], create=False)
    finally:
        for o in (owner, *workers):
            o.close()


# (per-slot (last ok ms, last down ms, first down since ok ms), the health they add up to)
HEALTH_CASES = [
    ([(0, 0, 0), (0, 0, 0)], Health(None, None)),
    ([(5000, 0, 0), (0, 0, 0)], Health(True, None)),
    ([(5000, 0, 0), (0, 7000, 6000)], Health(False, 6.0)),
    ([(5000, 9000, 8000), (0, 7000, 6000)], Health(False, 6.0)),  # both after the last ok
    ([(6500, 9000, 8000), (0, 7000, 6000)], Health(False, 7.0)),  # 6 s was before an answer
    ([(9500, 9000, 0), (0, 7000, 6000)], Health(True, None)),  # answered since
]


@pytest.mark.parametrize(("slots", "want"), HEALTH_CASES)
def test_health_is_the_most_recent_news_over_every_slot(
    slots: list[tuple[int, int, int]], want: Health
) -> None:
    assert _health(slots) == want


def test_a_stage_is_down_from_its_first_unreachable_attempt_until_it_answers() -> None:
    obs = Observations.private(["s:1"])
    stage = obs.slot(0).stages[0]
    stage.unreachable(10.0)
    stage.unreachable(12.0)
    assert obs.read().stages[0].health == Health(False, 10.0)
    stage.answered(13.0)
    assert obs.read().stages[0].health == Health(True, None)
    stage.unreachable(20.0)
    assert obs.read().stages[0].health == Health(False, 20.0)


def test_the_exposition_has_histograms_the_queue_age_and_stage_health() -> None:
    obs = Observations.private(["127.0.0.1:7000", "tac"])
    slot = obs.slot(0)
    slot.delay.observe(0.03)
    slot.stages[0].duration.observe(0.2)
    slot.stages[0].unreachable(50.0)
    slot.set_oldest(90.0)
    text = render(registry_for(Counters(), lambda: True, obs, clock=lambda: 100.0)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    kinds = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert kinds["buzon_delivery_delay_seconds"] == "histogram"
    assert kinds["buzon_transform_duration_seconds"] == "histogram"
    assert samples[("buzon_delivery_delay_seconds_bucket", (("le", "0.025"),))] == 0
    assert samples[("buzon_delivery_delay_seconds_bucket", (("le", "0.05"),))] == 1
    assert samples[("buzon_delivery_delay_seconds_bucket", (("le", "+Inf"),))] == 1
    assert samples[("buzon_delivery_delay_seconds_count", ())] == 1
    sidecar = (("le", "0.25"), ("sidecar", "127.0.0.1:7000"))
    assert samples[("buzon_transform_duration_seconds_bucket", sidecar)] == 1
    assert samples[("buzon_transform_duration_seconds_count", (("sidecar", "tac"),))] == 0
    assert samples[("buzon_queue_oldest_age_seconds", ())] == 10.0
    assert samples[("buzon_sidecar_up", (("sidecar", "127.0.0.1:7000"),))] == 0
    assert ("buzon_sidecar_up", (("sidecar", "tac"),)) not in samples  # never tried yet
    assert samples[("buzon_sidecar_down_seconds", (("sidecar", "127.0.0.1:7000"),))] == 50.0
    slot.stages[0].answered(99.0)
    text = render(registry_for(Counters(), lambda: True, obs, clock=lambda: 100.0,
                               retry_window=600.0, disk_free=lambda: 0.25)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("buzon_sidecar_down_seconds", (("sidecar", "127.0.0.1:7000"),))] == 0.0
    assert samples[("buzon_sidecar_up", (("sidecar", "127.0.0.1:7000"),))] == 1
    assert samples[("buzon_transform_retry_window_seconds", ())] == 600.0
    assert samples[("buzon_data_disk_free_ratio", ())] == 0.25
