"""The targets of summary.json from synthetic results: which figures each ratio compares."""

from __future__ import annotations

import pytest

from bench.summary import targets, verdict


def _point(variant="pruned_int8", c=16, batch=1, rps=1000.0, config="deployed", **extra):
    return {
        "section": "sweep", "variant": variant, "protocol": "http", "config": config,
        "load": "closed", "concurrency": c, "rate": None, "batch": batch, "throughput": rps,
        "images_per_s": rps * batch, "p50_ms": 2.0, "p99_ms": 5.0, "mean_ms": 2.5,
        "noise": {"client_cores": 0.1, "other_cores": 0.0}, **extra,
    }  # fmt: skip


def _inprocess(variant, kind, batch, threads, ips):
    return {"variant": variant, "kind": kind, "batch": batch, "threads": threads,
            "median_ms": 1e3 * batch / ips, "throughput": ips,
            "noise": {"other_cores": 0}}  # fmt: skip


def _check(batch, c, pa_ips, ours_ips, best):
    return {"protocol": "http", "concurrency": c, "batch": batch, "images_per_s": pa_ips,
            "p50_ms": 2.0, "p99_ms": 4.0, "client_cores": 0.3, "stable": True, "best": best,
            "ours_images_per_s": ours_ips, "ours_p50_ms": 2.0, "ours_p99_ms": 4.0,
            "ours_client_cores": 0.1}  # fmt: skip


@pytest.fixture
def results():
    return {
        "primary": "pruned_int8",
        "machine": {"cores": 2},
        "config": {"served": {"compare_concurrency": 16}, "noise": {"busy_cores": 0.25}},
        "variants": {"pruned_int8": {"instances": 2, "intra_op_threads": 1}},
        "inprocess": [
            _inprocess("eager_fp32", "eager", 1, 2, 1000.0),
            _inprocess("eager_fp32", "eager", 32, 2, 2000.0),
            _inprocess("pruned_int8", "onnx", 1, 1, 10_000.0),
            _inprocess("pruned_int8", "onnx", 32, 2, 20_000.0),
        ],
        "points": [
            _point(c=1, rps=2000.0),
            _point(c=16, rps=6000.0),
            _point(c=4, batch=32, rps=600.0),  # 19,200 images/s: the best point
            _point(c=16, rps=3000.0, config="no_dynamic_batching"),
        ],
        "perf_analyzer": [
            _check(1, 16, 4000.0, 6000.0, False),
            _check(32, 4, 20_000.0, 19_200.0, True),
        ],
    }


def test_served_figures_are_images_against_the_best_inprocess_row(results):
    t = targets(results)
    assert t["served_vs_inprocess"]["value"] == pytest.approx(19_200 / 20_000)
    assert t["served_vs_inprocess"]["met"] is True
    assert "32 images a request" in t["served_vs_inprocess"]["detail"]
    assert t["optimized_vs_eager"]["value"] == pytest.approx(19.2)
    assert "9.6x" in t["optimized_vs_eager"]["detail"]  # against eager's best batch too
    assert t["dynbatch_gain_c16"]["value"] == pytest.approx(2.0)


def test_perf_analyzer_target_is_taken_at_the_best_point(results):
    t = targets(results)["vs_perf_analyzer"]
    assert t["value"] == pytest.approx(0.96) and t["met"] is True
    assert "c16 x1: 1.50" in t["detail"]  # the other cross-check is reported, not hidden


def test_missing_sections_are_not_measured_and_the_verdict_says_so(results):
    results["perf_analyzer"] = []
    results["inprocess"] = []
    t = targets(results)
    assert t["vs_perf_analyzer"]["met"] is None and t["served_vs_inprocess"]["met"] is None
    text = verdict(results, t)
    assert "19200 images/s" in text and "6000 requests/s" in text
    assert "Not measured: served_vs_inprocess" in text
