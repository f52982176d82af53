"""The counters as Prometheus families: names, kinds, help, exact values past 2**32."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from buzon.metrics import Counters
from buzon.metrics.counters import GAUGES, REFUSAL_FIELDS, count_refusal
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
    assert sorted([*(m.counter for m in METRICS), *REFUSAL_FIELDS]) == sorted(
        f.name for f in fields(Counters))
    got = families(Counters())
    assert len(got) == len(METRICS) + 2  # and the refusals by code, the transform switch
    for metric in METRICS:
        kind, doc, value = got[metric.exposed]
        assert metric.exposed.startswith("buzon_")
        assert kind == ("gauge" if metric.counter in GAUGES else "counter")
        assert doc and value == 0


def test_refusals_are_one_family_labelled_by_reply_code() -> None:
    counters = Counters()
    for reply in (b"550 5.1.1 <x@y>: User unknown\r\n", b"550 5.7.1 relay\r\n",
                  b"421 4.3.2 busy\r\n", b"599 9.9.9 invented\r\n"):
        count_refusal(counters, reply)
    text = render(registry_for(counters, lambda: False)).decode()
    samples = {s.labels["code"]: s.value
               for family in text_string_to_metric_families(text)
               if family.name == "buzon_smtp_refusals" for s in family.samples}
    assert samples == {f.removeprefix("refused_"): 0.0 for f in REFUSAL_FIELDS} | {
        "550": 2.0, "421": 1.0, "other": 1.0}


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
