"""The alert rules, as a table: history, stages, disk and thresholds in, alert kinds out."""

from __future__ import annotations

import pytest

from buzon.observe.alerts import Point, StageState, Thresholds, alerts

LIMITS = Thresholds(retry_window=60, queue_growth=300, disk_free_percent=5, auth_failures=10,
                    auth_window=300)
NOW = 10_000.0


def history(depths: list[int], step: float = 60.0, auth: list[int] | None = None) -> list[Point]:
    """Points ``step`` seconds apart, the last at NOW."""
    n = len(depths)
    auth = auth or [0] * n
    return [Point(NOW - (n - 1 - i) * step, d, a) for i, (d, a) in enumerate(zip(depths, auth))]


UP = StageState("127.0.0.1:7000", True, None)
CASES = [
    # (what, history, stages, disk free %, expected kinds)
    ("quiet", history([0, 0, 0, 0, 0, 0]), [UP], 50.0, []),
    ("never tried", history([0]), [StageState("tac", None, None)], 50.0, []),
    ("down within the window", history([0]), [StageState("s:1", False, NOW - 60)], None, []),
    ("down past the window", history([0]), [StageState("s:1", False, NOW - 61)], None,
     ["sidecar-down"]),
    ("two stages, one down", history([0]), [UP, StageState("s:2", False, NOW - 900)], None,
     ["sidecar-down"]),
    ("growing for 5 min", history([1, 2, 3, 5, 8, 13]), [UP], None, ["queue-growing"]),
    ("growing, but not for long enough", history([1, 2, 3, 5]), [UP], None, []),
    ("grew then drained", history([1, 2, 3, 0, 8, 13]), [UP], None, []),
    ("fell below its start", history([5, 6, 4, 7, 8, 13]), [UP], None, []),
    ("flat, not deeper", history([4, 5, 6, 5, 4, 4]), [UP], None, []),
    ("one in flight at both ends", history([0, 0, 0, 0, 0, 1]), [UP], None, []),
    ("disk at the threshold", history([0]), [], 5.0, []),
    ("disk below", history([0]), [], 4.9, ["disk-full"]),
    ("auth: 9 in 5 min", history([0] * 6, auth=[0, 0, 1, 3, 6, 9]), [], None, []),
    ("auth: 10 in 5 min", history([0] * 6, auth=[0, 0, 1, 3, 6, 10]), [], None,
     ["auth-failures"]),
    ("auth: 10 but over 6 min", history([0] * 7, auth=[0, 1, 1, 3, 6, 9, 10]), [], None, []),
    ("auth: a young history counts from its start", history([0, 0], auth=[0, 12]), [], None,
     ["auth-failures"]),
    ("everything", history([1, 2, 3, 5, 8, 13], auth=[0] * 5 + [50]),
     [StageState("s:1", False, 0.0)], 1.0,
     ["sidecar-down", "queue-growing", "disk-full", "auth-failures"]),
    ("no history at all", [], [], None, []),
]


@pytest.mark.parametrize(("points", "stages", "disk", "kinds"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_alerts(points: list[Point], stages: list[StageState], disk: float | None,
                kinds: list[str]) -> None:
    assert [a.kind for a in alerts(points, stages, disk, NOW, LIMITS)] == kinds


def test_the_banner_text_names_the_stage_and_the_window() -> None:
    (alert,) = alerts([], [StageState("127.0.0.1:7000", False, NOW - 90)], None, NOW, LIMITS)
    assert alert.text == ("transform 127.0.0.1:7000 unreachable for 90 s, past the retry "
                          "window of 60 s")
