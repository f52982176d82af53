"""Prometheus's query_range answers turned into dashboard samples (observe/history.py).

The answers have the shape of Prometheus's HTTP API (``resultType: matrix``, values as
``[unix time, "string"]``, ``"NaN"`` where a window had no data); the system test
(tests/system/test_monitoring.py) feeds the same function the real thing.
"""

from __future__ import annotations

import pytest

from buzon.observe.history import QUERIES, HistoryError, samples_from


def matrix(*values: tuple[float, str]) -> dict:
    return {"status": "success",
            "data": {"resultType": "matrix",
                     "result": [{"metric": {}, "values": [[t, v] for t, v in values]}]}}


def answers(**series: dict) -> dict:
    empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    return {field: series.get(field.replace(".", "_"), empty) for field in QUERIES}


def test_points_merge_by_time_into_samples_of_the_pages_shape() -> None:
    got = samples_from(answers(
        rates_messages=matrix((100.0, "2.5"), (115.0, "0")),
        queue_depth=matrix((100.0, "7"), (115.0, "3")),
        delay_p95=matrix((100.0, "NaN"), (115.0, "0.125")),
    ), before=None)
    assert [s["t"] for s in got] == [100.0, 115.0]
    first, second = got
    assert first["rates"]["messages"] == 2.5 and first["rates"]["connections"] == 0.0
    assert (first["queue_depth"], second["queue_depth"]) == (7, 3)
    assert (first["delay_p95"], second["delay_p95"]) == (None, 0.125)  # NaN: no data
    assert all(s["source"] == "prometheus" for s in got)


def test_points_at_or_after_the_first_local_sample_are_left_to_it() -> None:
    got = samples_from(answers(queue_depth=matrix((100.0, "1"), (115.0, "2"), (130.0, "3"))),
                       before=115.0)
    assert [s["t"] for s in got] == [100.0]


@pytest.mark.parametrize("bad", [
    {"status": "error", "errorType": "bad_data", "error": "parse error"},
    {"status": "success", "data": {"resultType": "vector", "result": []}},
    {"status": "success", "data": {"resultType": "matrix",
                                   "result": [{"values": [[1.0]]}]}},
    "not json at all",
])
def test_an_answer_that_is_not_a_matrix_is_a_history_error(bad: object) -> None:
    with pytest.raises(HistoryError):
        samples_from(answers() | {"queue_depth": bad}, before=None)
