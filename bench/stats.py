"""Latency percentiles and perf_analyzer's stability rule over measurement windows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (50, 90, 95, 99)
# The one definition bench and reliability report, stated in their reports.
PERCENTILE_RULE = (
    "nearest-rank percentiles (pN is the smallest latency with at least N% of requests at or "
    "below it: a latency a request really had, never interpolated)"
)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the smallest value with at least p% of values at or below it).

    Nearest rank, not interpolation: every reported latency is one a request really had.
    bench and reliability both use this one.
    """
    if not sorted_values:
        return math.nan
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass
class Window:
    """Requests that completed inside [start, end): the unit perf_analyzer measures in."""

    start: float
    end: float
    latencies: list[float]  # seconds, successful requests only
    errors: int = 0
    dropped: int = 0  # open loop: arrivals not sent because max_inflight were pending

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_latency(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.latencies else math.nan


def window_of(records: Sequence[tuple[float, float, bool]], start: float, end: float) -> Window:
    """The window of (end_time, latency_s, ok) records whose end time is in [start, end)."""
    latencies, errors = [], 0
    for finished, latency, ok in records:
        if start <= finished < end:
            if ok:
                latencies.append(latency)
            else:
                errors += 1
    return Window(start, end, latencies, errors)


def stable(windows: Sequence[Window], n: int = 3, tolerance: float = 0.10) -> bool:
    """perf_analyzer's test: over the last n windows, max/min of throughput and of mean
    latency are each within 1 + tolerance. Windows without completions are never stable."""
    if len(windows) < n:
        return False
    last = windows[-n:]
    if any(w.count == 0 for w in last):
        return False
    for values in ([w.throughput for w in last], [w.mean_latency for w in last]):
        if max(values) / min(values) > 1 + tolerance:
            return False
    return True


def merge(windows: Sequence[Window]) -> Window:
    """One window over several adjacent ones: what a stable point reports, as perf_analyzer
    merges its last three measurements."""
    return Window(
        windows[0].start,
        windows[-1].end,
        [lat for w in windows for lat in w.latencies],
        sum(w.errors for w in windows),
        sum(w.dropped for w in windows),
    )


def summarize(window: Window) -> dict:
    """Throughput (requests/s), latency percentiles and mean (ms), error and drop counts."""
    ordered = sorted(window.latencies)
    out = {
        "throughput": window.throughput,
        "requests": window.count,
        "errors": window.errors,
        "dropped": window.dropped,
        "seconds": window.seconds,
        "mean_ms": window.mean_latency * 1e3,
    }
    for p in PERCENTILES:
        out[f"p{p}_ms"] = percentile(ordered, p) * 1e3
    return out
