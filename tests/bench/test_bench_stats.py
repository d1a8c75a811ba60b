"""Percentiles, the window rule, the server split and the noise arithmetic on synthetic data."""

from __future__ import annotations

import math

import pytest

from bench import noise, triton_stats
from bench.stats import Window, merge, percentile, stable, summarize, window_of


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert [percentile(values, p) for p in (50, 90, 95, 99, 100)] == [50, 90, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # a real sample, never interpolated
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_window_keeps_completions_inside_and_counts_errors():
    records = [(0.5, 0.1, True), (1.0, 0.2, True), (1.5, 0.3, False), (2.0, 0.4, True)]
    w = window_of(records, 1.0, 2.0)
    assert w.latencies == [0.2] and w.errors == 1
    assert w.throughput == 1.0 and w.mean_latency == 0.2


def _window(start: float, count: int, latency: float) -> Window:
    return Window(start, start + 1.0, [latency] * count)


def test_three_windows_within_ten_percent_are_stable():
    windows = [
        _window(0, 50, 0.010),
        _window(1, 100, 0.010),
        _window(2, 105, 0.0105),
        _window(3, 98, 0.0101),
    ]
    assert not stable(windows[:3])  # 50 vs 105: not within 10%
    assert stable(windows)  # the last three agree
    assert not stable(windows[-2:])  # fewer than three windows


def test_latency_drift_or_empty_window_is_unstable():
    drift = [_window(0, 100, 0.010), _window(1, 100, 0.010), _window(2, 100, 0.012)]
    assert not stable(drift)
    assert stable(drift, tolerance=0.25)
    assert not stable([_window(0, 0, 0.0), _window(1, 100, 0.01), _window(2, 100, 0.01)])


def test_merge_and_summary():
    a, b = Window(0, 1, [0.001] * 9 + [0.1], errors=1), Window(1, 2, [0.002] * 10, dropped=3)
    s = summarize(merge([a, b]))
    assert s["requests"] == 20 and s["errors"] == 1 and s["dropped"] == 3
    assert s["throughput"] == 10.0 and s["seconds"] == 2
    # sorted: nine 1 ms, ten 2 ms, one 100 ms; rank of p50 = 10 -> 2 ms
    assert s["p50_ms"] == pytest.approx(2.0) and s["p90_ms"] == pytest.approx(2.0)
    assert s["p99_ms"] == pytest.approx(100.0)


def _snap(success, queue, infer, executions, inferences):
    return {
        "success": success,
        "success_ns": (queue + infer) * 2,
        "fail": 0,
        "execution_count": executions,
        "inference_count": inferences,
        "queue_ns": queue,
        "compute_input_ns": 0,
        "compute_infer_ns": infer,
        "compute_output_ns": 0,
    }


def test_server_split_is_per_request_between_snapshots():
    before, after = (
        _snap(10, 1_000_000, 5_000_000, 10, 10),
        _snap(110, 21_000_000, 55_000_000, 35, 110),
    )
    s = triton_stats.split(before, after)
    assert s["server_requests"] == 100 and s["avg_batch"] == 4.0
    assert s["queue_ms"] == 0.2 and s["compute_infer_ms"] == 0.5
    assert triton_stats.split(before, before)["queue_ms"] is None


def test_snapshot_reads_the_http_statistics_form():
    stats = {
        "model_stats": [
            {
                "name": "m",
                "inference_count": 3,
                "execution_count": 2,
                "inference_stats": {
                    "success": {"count": 3, "ns": 30},
                    "queue": {"count": 3, "ns": 9},
                    "compute_infer": {"count": 3, "ns": 12},
                },
            }
        ]
    }
    snap = triton_stats.snapshot(stats, "m")
    assert snap["queue_ns"] == 9 and snap["compute_infer_ns"] == 12 and snap["fail"] == 0
    with pytest.raises(KeyError):
        triton_stats.snapshot(stats, "other")


def test_noise_other_load_is_machine_minus_ours():
    hz = noise.CLOCK_TICKS
    a = noise.Sample(t=0.0, busy=0, ours=0, client=0)
    b = noise.Sample(t=2.0, busy=3 * hz, ours=1 * hz, client=hz)  # 1.5 busy, 0.5 ours
    load = noise.load_between(a, b)
    assert load["busy_cores"] == 1.5 and load["our_cores"] == 0.5 and load["other_cores"] == 1.0
    assert load["client_cores"] == 0.5
    assert noise.is_busy(load, 0.25) and not noise.is_busy(load, 1.5)


def test_noise_sample_of_this_process_is_sane():
    a = noise.sample()
    sum(i * i for i in range(200_000))  # some CPU of our own
    b = noise.sample()
    load = noise.load_between(a, b)
    assert b.ours >= b.client - a.client + a.ours and b.busy >= a.busy
    assert load["other_cores"] >= 0 and load["client_cores"] >= 0
