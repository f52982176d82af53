"""Histograms, the oldest message's age and stage health on ``/metrics``, from real servers.

The delay histogram is read from ``python -m buzon`` with ``BUZON_WORKERS=3``
(its slots summed by the supervisor); the duration histogram from a server
whose local transform sleeps a known time, so it must land in a known bucket;
stage health from a sidecar address nobody listens on.
"""

from __future__ import annotations

import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from helpers import RunningServer, free_port, server_process, wait_for
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET with urllib: status, headers, body (error statuses included)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    status, _, body = get(port, "/metrics")
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """``(le, cumulative count)`` of one histogram series, in order of ``le``."""
    want = set(labels.items())
    return sorted((float(dict(key)["le"]), value) for (sample, key), value in samples.items()
                  if sample == name + "_bucket" and want <= set(key))


def assert_well_formed(samples: Samples, name: str, count: int, **labels: str) -> None:
    pairs = buckets(samples, name, **labels)
    key = tuple(sorted(labels.items()))
    assert pairs, f"no {name} buckets"
    assert [c for _, c in pairs] == sorted(c for _, c in pairs), pairs  # monotonic
    assert pairs[-1] == (float("inf"), count)
    assert samples[(name + "_count", key)] == count


def send(port: int, n: int) -> None:
    for i in range(n):
        with smtplib.SMTP(HOST, port, timeout=10) as client:
            client.sendmail("alice@example.org", ["bob@example.org"], f"m {i}\r\n")


def test_the_delay_histogram_counts_every_delivery_across_three_workers(tmp_path: Path) -> None:
    http = free_port()
    env = {"BUZON_WORKERS": "3", "BUZON_HTTP_PORT": str(http)}
    with server_process(tmp_path / "data", free_port(), env=env) as server:
        assert wait_for(lambda: "buzon started, supervisor" in server.log.read_text())
        send(server.port, 30)
        assert wait_for(lambda: scrape(http)[("buzon_deliveries_total", ())] == 30)
        now = scrape(http)
        assert_well_formed(now, "buzon_delivery_delay_seconds", 30)
        delay_sum = now[("buzon_delivery_delay_seconds_sum", ())]
        assert 0 < delay_sum < 30 * 5  # each well under the 5 s a loaded CI box might take
        assert buckets(now, "buzon_delivery_delay_seconds")[0][0] == 0.005
        # Nothing is queued any more: the workers' gauges go back to no oldest message.
        assert wait_for(lambda: scrape(http)[("buzon_queue_oldest_age_seconds", ())] == 0)
        assert server.terminate() == 0


def test_a_transform_that_sleeps_lands_in_its_bucket_and_the_queue_age_grows(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    # Waits for the gate (so the queue's age can be seen growing), then sleeps 0.3 s.
    program = f"sh -c 'while [ ! -e {gate} ]; do sleep 0.02; done; sleep 0.3; cat'"
    server = make_server(http_port=0, transform=program)
    port = server.server.http_addresses[0][1]
    send(server.port, 1)
    assert wait_for(lambda: scrape(port)[("buzon_queue_oldest_age_seconds", ())] >= 1.0)
    gate.touch()
    send(server.port, 3)
    server.wait_idle()
    now = scrape(port)
    assert_well_formed(now, "buzon_transform_duration_seconds", 4, sidecar="sh")
    pairs = dict(buckets(now, "buzon_transform_duration_seconds", sidecar="sh"))
    # 0.3 s of sleep and a shell's start-up: the (0.25, 0.5] bucket; the first
    # message, which waited over a second for the gate, is further up.
    assert (pairs[0.25], pairs[0.5], pairs[1.0]) == (0, 3, 3)
    assert now[("buzon_sidecar_up", (("sidecar", "sh"),))] == 1
    assert_well_formed(now, "buzon_delivery_delay_seconds", 4)
    assert wait_for(lambda: scrape(port)[("buzon_queue_oldest_age_seconds", ())] == 0)


def test_a_sidecar_nobody_answers_on_is_down(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    key = tmp_path / "key"
    key.write_text(bytes(range(32)).hex() + "\n")
    address = f"127.0.0.1:{free_port()}"
    server = make_server(http_port=0, transform_sidecars=address, transform_key_file=key,
                         transform_retry_window=60.0)
    port = server.server.http_addresses[0][1]
    assert ("buzon_sidecar_up", (("sidecar", address),)) not in scrape(port)  # no news yet
    send(server.port, 1)
    assert wait_for(lambda: scrape(port).get(("buzon_sidecar_up", (("sidecar", address),))) == 0)
    assert wait_for(lambda: scrape(port)[("buzon_sidecar_down_seconds",
                                          (("sidecar", address),))] >= 1.0)
    now = scrape(port)
    assert now[("buzon_transform_retry_window_seconds", ())] == 60.0
    assert 0 < now[("buzon_data_disk_free_ratio", ())] <= 1
    assert scrape(port)[("buzon_transform_duration_seconds_count", (("sidecar", address),))] >= 1
