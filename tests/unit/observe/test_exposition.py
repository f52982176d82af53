"""The counters as Prometheus families: names, kinds, help, exact values past 2**32."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from buzon.metrics import Counters
from buzon.metrics.counters import GAUGES
from buzon.observe import METRICS, queue_problem, registry_for, render, routes
from buzon.observe.httpd import Request


def families(counters: Counters, enabled: bool = False) -> dict[str, tuple[str, str, float]]:
    text = render(registry_for(counters, lambda: enabled)).decode()
    return {
        sample.name: (family.type, family.documentation, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_counter_is_exposed_once_with_a_prefix_help_and_its_kind() -> None:
    assert sorted(m.counter for m in METRICS) == sorted(f.name for f in fields(Counters))
    got = families(Counters())
    assert len(got) == len(METRICS) + 1  # and the transform switch
    for metric in METRICS:
        kind, doc, value = got[metric.exposed]
        assert metric.exposed.startswith("buzon_")
        assert kind == ("gauge" if metric.counter in GAUGES else "counter")
        assert doc and value == 0


def test_values_are_read_at_scrape_time_and_exact_past_32_bits() -> None:
    counters = Counters()
    registry = registry_for(counters, lambda: True)
    counters.bytes_transferred = 2**40 + 3
    counters.queue_depth = 5
    text = render(registry).decode()
    assert "buzon_smtp_bytes_total 1.099511627779e+12\n" in text
    assert "buzon_queue_depth 5.0\n" in text
    assert "buzon_transform_enabled 1.0\n" in text


def test_readyz_answers_503_with_the_reason(tmp_path: Path) -> None:
    table = routes(registry_for(Counters(), lambda: False), lambda: "the queue is on fire")
    answer = asyncio.run(table["/readyz"](Request("GET", "/readyz")))
    assert (answer.status, answer.body) == (503, b"not ready: the queue is on fire\n")
    assert asyncio.run(routes(registry_for(Counters(), lambda: False), lambda: None)["/readyz"](Request("GET", "/readyz"))
                       ).status == 200


def test_queue_problem(tmp_path: Path) -> None:
    assert queue_problem([tmp_path], 1024) is None
    assert queue_problem([tmp_path / "gone"], 1024) == (
        f"queue directory {tmp_path / 'gone'}: No such file or directory")
    reason = queue_problem([tmp_path], 1 << 62)
    assert reason is not None and reason.endswith("bytes free, less than one message")
