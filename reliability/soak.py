"""A bounded soak: answer-checked load at fixed concurrency, server RSS sampled throughout.

RSS is the sum over tritonserver and its Python stub processes (shared pages count once per
process, the same at every sample). Growth compares the last samples with those right after
the warm-up, when allocators, caches and ORT's arenas have reached their working size.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.stats import percentile
from reliability.load import Load, Record, summary
from reliability.reference import Probe
from reliability.report import plot_soak
from serve import procs
from serve.server import TritonServer

MAX_GROWTH = 0.10
WARMUP_SHARE, WARMUP_CAP_S = 0.2, 60.0
MB = 2**20


def _windows(records: list[Record], t0: float, width: float, end: float) -> list[dict]:
    windows = []
    edges = np.arange(0.0, end + width, width)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        done = [r for r in records if lo <= r.end - t0 < hi]
        latencies = sorted(1e3 * (r.end - r.start) for r in done if r.ok)
        windows.append(
            {
                "t": float((lo + hi) / 2),
                "requests": len(done),
                "failed": sum(1 for r in done if not r.ok),
                "rps": len(done) / width,
                "p99_ms": percentile(latencies, 99) if latencies else None,
            }
        )
    return [w for w in windows if w["requests"]]


def _mean_mb(samples: list[dict]) -> float:
    return float(np.mean([s["total_mb"] for s in samples]))


def run(
    server: TritonServer, probes: list[Probe], minutes: float, concurrency: int, out: Path
) -> dict:
    seconds = 60.0 * minutes
    warmup = min(WARMUP_CAP_S, WARMUP_SHARE * seconds)
    every = max(1.0, seconds / 150)
    samples = []
    with Load(server, probes, concurrency, seconds) as load:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            rss = procs.tree_rss(server.process.pid)
            mb = {name: value / MB for name, value in rss.items()}
            samples.append({"t": time.monotonic() - t0, "mb": mb, "total_mb": sum(mb.values())})
            time.sleep(every)
        load.wait()
    after_warmup = [s for s in samples if s["t"] >= warmup][:3]
    baseline, final = _mean_mb(after_warmup), _mean_mb(samples[-3:])
    windows = _windows(load.records, t0, max(5.0, every * 2), seconds + every)
    result = {
        "minutes": minutes,
        "concurrency": concurrency,
        **summary(load.records),
        "warmup_s": warmup,
        "rss_baseline_mb": baseline,
        "rss_final_mb": final,
        "rss_growth": final / baseline - 1,
        "windows": windows,
        "samples": samples,
    }
    result["plot"] = str(plot_soak(out / "soak.png", samples, windows, warmup))
    result["passed"] = result["failed"] == 0 and result["rss_growth"] < MAX_GROWTH
    return result


def report(result: dict) -> str:
    lines = [f"{'t (s)':>7}  {'RSS MB':>8}  {'p99 ms':>7}  {'req/s':>6}  failed"]
    step = max(1, len(result["windows"]) // 10)
    samples = result["samples"]
    for w in result["windows"][::step]:
        near = min(samples, key=lambda s: abs(s["t"] - w["t"]))
        p99 = f"{w['p99_ms']:.1f}" if w["p99_ms"] is not None else "-"
        lines.append(
            f"{w['t']:>7.0f}  {near['total_mb']:>8.1f}  {p99:>7}  {w['rps']:>6.0f}  {w['failed']}"
        )
    lines.append(
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms (nearest rank); "
        f"RSS {result['rss_baseline_mb']:.0f} MB after {result['warmup_s']:.0f} s warm-up -> "
        f"{result['rss_final_mb']:.0f} MB at the end; {result['retried']} requests retried; "
        f"plot {result['plot']}"
    )
    lines.append(
        f"soak: {result['requests']} requests, {result['failed']} errors, "
        f"rss growth {100 * result['rss_growth']:.1f}%"
    )
    return "\n".join(lines)
