"""reliability's latency summary: the nearest-rank percentiles bench reports too."""

from __future__ import annotations

import pytest

from bench.stats import percentile
from reliability.load import Record, summary
from reliability.soak import _windows


def _records(latencies_ms: list[float]) -> list[Record]:
    return [Record(start=0.0, end=ms / 1e3, ok=True, attempts=1) for ms in latencies_ms]


def test_summary_percentiles_are_nearest_rank_as_in_bench():
    failed = Record(0.0, 0.5, ok=False, attempts=3, errors=[(0.5, "refused", True)])
    s = summary(_records([1.0, 2.0, 3.0, 4.0]) + [failed])
    # interpolating would give 2.5 and 3.97 ms: latencies no request had
    assert s["p50_ms"] == pytest.approx(2.0) and s["p99_ms"] == pytest.approx(4.0)
    assert s["p50_ms"] == pytest.approx(percentile([1.0, 2.0, 3.0, 4.0], 50))
    assert s["failed"] == 1  # a failed request has no latency to count
    assert summary([])["p99_ms"] is None


def test_soak_windows_use_the_same_rule():
    windows = _windows(_records([1.0, 2.0, 3.0, 4.0]), t0=0.0, width=1.0, end=1.0)
    assert [w["p99_ms"] for w in windows] == [pytest.approx(4.0)]
