"""The targets of summary.json and the report's sections from synthetic results: which figures
each ratio compares, and what each section shows."""

from __future__ import annotations

import re

import pytest

from bench import report
from bench.summary import (
    TARGETS,
    facts,
    fastapi_baseline,
    overhead_sides,
    raw_overhead_sides,
    target,
    targets,
    verdict,
)


def _point(variant="pruned_int8", c=16, batch=1, rps=1000.0, config="deployed", **extra):
    return {
        "section": "sweep", "variant": variant, "protocol": "http", "config": config,
        "load": "closed", "concurrency": c, "rate": None, "batch": batch, "throughput": rps,
        "images_per_s": rps * batch, "p50_ms": 2.0, "p99_ms": 5.0, "mean_ms": 2.5,
        "noise": {"client_cores": 0.1, "other_cores": 0.0}, "path": "tensor", **extra,
    }  # fmt: skip


def _inprocess(variant, kind, batch, threads, ips):
    return {"variant": variant, "kind": kind, "batch": batch, "threads": threads,
            "median_ms": 1e3 * batch / ips, "throughput": ips,
            "noise": {"other_cores": 0}}  # fmt: skip


def _check(batch, c, pa_ips, ours_ips, best):
    return {"protocol": "http", "concurrency": c, "batch": batch, "images_per_s": pa_ips,
            "p50_ms": 2.0, "p99_ms": 4.0, "client_cores": 0.3, "stable": True, "best": best,
            "ours_images_per_s": ours_ips, "ours_p50_ms": 2.0, "ours_p99_ms": 4.0,
            "ours_client_cores": 0.1, "command": "perf_analyzer -m m"}  # fmt: skip


KNOBS = {"instances": 2, "intra_op_threads": 1, "dynamic_batching": True,
         "max_queue_delay_us": 0, "preferred_batch_size": [], "max_batch_size": 32}  # fmt: skip


@pytest.fixture
def results():
    return {
        "model": "default",
        "timestamp": "20260101-000000",
        "quick": False,
        "primary": "pruned_int8",
        "machine": {"cpu": "test cpu", "cores": 2},
        "config": {
            "served": {"compare_concurrency": 16, "max_inflight": 512},
            "noise": {"busy_cores": 0.25, "retries": 2},
            "windows": {"warmup_s": 2, "window_s": 2, "windows": 3, "stability": 0.1, "max_s": 30},
            "inprocess": {"threads": [1, 2], "eager_threads": 0},
        },  # fmt: skip
        "variants": {"pruned_int8": KNOBS},
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
            _point(c=16, rps=2500.0, config="fastapi", workers=2, threads=1, p99_ms=9.0),
            _point(c=16, rps=2000.0, config="fastapi", workers=1, threads=2, p99_ms=12.0),
        ],
        "perf_analyzer": [
            _check(1, 16, 4000.0, 6000.0, False),
            _check(32, 4, 20_000.0, 19_200.0, True),
        ],
        "warnings": [],
        "errors": {},
    }


def _winners(results, ours_rps=(5000.0, 6000.0), theirs_rps=(5100.0, 6100.0), ours_p99=5.0):
    for c, o, t in zip((16, 32), ours_rps, theirs_rps, strict=True):
        results["points"] += [
            _point(c=c, rps=o, config="search_winner", section="analyzer", p99_ms=ours_p99),
            _point(c=c, rps=t, config="analyzer_winner", section="analyzer", p99_ms=5.0),
        ]
    results["analyzer"] = {
        "source": "bench/results/model_analyzer/x", "search": "brute search",
        "winner": {**KNOBS, "instances": 3, "max_batch_size": 8}, "ours": KNOBS,
        "ours_from": "this run's search",
        "own": [{"concurrency": 16, "throughput": 8281.0, "p99_ms": 7.0}],
    }  # fmt: skip


def test_served_figures_are_images_against_the_best_inprocess_row(results):
    t = targets(results)
    assert t["served_vs_inprocess"]["value"] == pytest.approx(19_200 / 20_000)
    assert t["served_vs_inprocess"]["met"] is True
    assert "32 images a request" in t["served_vs_inprocess"]["detail"]
    assert t["dynbatch_gain_c16"]["value"] == pytest.approx(2.0)


def test_served_figures_compare_the_better_of_one_process_and_the_deployed_processes(results):
    results["tensor_inprocess"] = [
        {"workers": 2, "threads": 1, "batch": 32, "images_per_s": 24_000.0, "decode": False}
    ]
    t = targets(results)["served_vs_inprocess"]
    assert t["value"] == pytest.approx(19_200 / 24_000) and t["met"] is False
    assert "in-process best 24000 images/s (2 process(es) x 1 thread(s), batch 32)" in t["detail"]
    assert "also 1 process, batch 32, 2 thread(s): 20000" in t["detail"]
    results["tensor_inprocess"][0]["images_per_s"] = 16_000.0  # slower: one process is compared
    assert targets(results)["served_vs_inprocess"]["value"] == pytest.approx(19_200 / 20_000)


def _paired(values, a="tensor path served, http c4", b="in-process 1 process(es)", how="A / B"):
    rounds = [{"first": "ab"[i % 2], "a": 0.0, "b": 0.0, "value": v} for i, v in enumerate(values)]
    return {"a": a, "b": b, "how": how, "rounds": rounds, "min": min(values), "max": max(values),
            "median": sorted(values)[len(values) // 2]}  # fmt: skip


def test_paired_rounds_give_the_value_and_keep_the_unpaired_figure(results):
    unpaired = targets(results)["served_vs_inprocess"]
    assert unpaired["value"] == pytest.approx(0.96) and unpaired["paired"] is None
    results["paired"] = {"served_vs_inprocess": _paired([0.85, 0.88, 1.3])}
    t = targets(results)["served_vs_inprocess"]
    assert t["value"] == 0.88 and t["met"] is False  # the median round, not the sweep's 0.96
    assert t["paired"] == {"rounds": 3, "min": 0.85, "max": 1.3, "unpaired": 0.96}
    assert "median of 3 paired rounds of A / B, range 0.85 to 1.30" in t["detail"]
    assert "unpaired 0.96: pruned_int8: served 19200" in t["detail"]
    # a pair for a target this run did not measure unpaired changes nothing
    results["paired"]["raw_vs_inprocess"] = _paired([0.9])
    assert targets(results)["raw_vs_inprocess"]["value"] is None
    tgts = targets(results)
    text = "\n".join(report._paired(report.Run(results, tgts, "")))
    assert "| `served_vs_inprocess` | tensor path served, http c4 |" in text
    assert "| A / B | 0.85 (A), 0.88 (B), 1.30 (A) | 0.880 | 0.960 |" in text
    assert "raw_vs_inprocess" not in text
    del results["paired"]
    assert report._paired(report.Run(results, targets(results), "")) == []


def test_optimized_vs_eager_is_like_for_like_with_batch1_beside_it(results):
    t = targets(results)
    like = t["optimized_vs_eager"]
    assert like["value"] == pytest.approx(19_200 / 2000)  # eager at its own best batch (32)
    assert like["met"] is False and "batch 32" in like["detail"]
    one = t["optimized_vs_eager_batch1"]
    assert one["value"] == pytest.approx(19.2) and "batch 1" in one["detail"]
    assert one["met"] is None and one["target"] == "-"  # for reference, no goal of its own
    text = verdict(results, t)
    assert "optimized_vs_eager_batch1" not in text  # neither met, missed nor "not measured"
    assert "optimized_vs_eager: eager here is already fast" in text  # among the missed


def test_fastapi_baseline_is_its_best_configuration_with_the_same_threads(results):
    t = targets(results)["triton_vs_fastapi_c16"]
    assert t["value"] == pytest.approx(6000 / 2500) and t["met"] is True
    assert "FastAPI's best (2 worker(s) x 1 thread(s))" in t["detail"]
    assert "1 x 2: 2000/s" in t["detail"]  # the other configuration, reported
    base = fastapi_baseline(results)
    assert base["best"] == {"workers": 2, "threads": 1}
    assert sorted((s["workers"], s["threads"]) for s in base["configs"]) == [(1, 2), (2, 1)]
    assert base["triton"] == {"instances": 2, "intra_op_threads": 1}
    assert base["same_total_threads"] is True
    results["points"][-1]["threads"] = 4  # 1 worker x 4 threads: more than Triton's 2
    assert fastapi_baseline(results)["same_total_threads"] is False


def test_fastapi_p99_worse_than_triton_misses(results):
    results["points"][4]["p99_ms"] = 4.0  # the best FastAPI shape beats Triton's p99 of 5.0
    t = targets(results)["triton_vs_fastapi_c16"]
    assert t["met"] is False and "WORSE" in t["detail"]


def test_keys_carry_the_comparison_concurrency(results):
    results["config"]["served"]["compare_concurrency"] = 4
    t = targets(results)
    assert "dynbatch_gain_c4" in t and "triton_vs_fastapi_c4" in t
    assert not any(k.endswith("_c16") for k in t)


def test_perf_analyzer_target_is_taken_at_the_best_point(results):
    t = targets(results)["vs_perf_analyzer"]
    assert t["value"] == pytest.approx(0.96) and t["met"] is True
    assert "c16 x1: 1.50" in t["detail"]  # the other cross-check is reported, not hidden


def test_search_vs_model_analyzer_takes_the_worst_concurrency(results):
    assert targets(results)["search_vs_model_analyzer"]["met"] is None  # no analyzer points
    _winners(results, ours_rps=(5000.0, 5500.0), theirs_rps=(5100.0, 6100.0))
    t = targets(results)["search_vs_model_analyzer"]
    assert t["value"] == pytest.approx(5500 / 6100, abs=1e-3) and t["met"] is False
    assert "c32: ours 5500/s" in t["detail"]


def test_search_vs_model_analyzer_needs_p99_no_worse(results):
    _winners(results, ours_rps=(5100.0, 6100.0), ours_p99=5.2)  # within 5% of its 5.0 ms
    assert targets(results)["search_vs_model_analyzer"]["met"] is True
    _winners(results, ours_rps=(5100.0, 6100.0), ours_p99=6.0)
    assert targets(results)["search_vs_model_analyzer"]["met"] is False


def test_missing_sections_are_not_measured_and_the_verdict_says_so(results):
    results["perf_analyzer"] = []
    results["inprocess"] = []
    t = targets(results)
    assert t["vs_perf_analyzer"]["met"] is None and t["served_vs_inprocess"]["met"] is None
    text = verdict(results, t)
    assert "19200 images/s" in text and "6000 requests/s" in text
    assert "Not measured: served_vs_inprocess" in text
    assert "nearest-rank" in text


def test_a_target_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        target("served_vs_inprocess", ">=", 1.0, "again")(lambda f: None)
    assert len(TARGETS) == len({t.key for t in TARGETS.values()})


def test_report_sections_show_their_data_or_nothing(results):
    tgts = targets(results)
    run = report.Run(results, tgts, verdict(results, tgts))
    side = report._side_by_side(run)
    assert any("| fastapi 2 x 1 | http |" in line for line in side)
    assert any("| fastapi 1 x 2 | http |" in line for line in side)
    assert report._search(run) == [] and report._analyzer(run) == []
    _winners(results)
    analyzer = report._analyzer(report.Run(results, tgts, ""))
    rows = [line for line in analyzer if line.startswith("| 16 |") or line.startswith("| 32 |")]
    assert len(rows) == 4 and "3 instance(s)" in rows[1] and "| 8281 |" in rows[1]
    header = report._header(run)
    assert any("nearest-rank" in line for line in header)
    assert any("FastAPI baseline 1 uvicorn worker(s) x 2 onnxruntime thread(s) and 2" in line
               for line in header)  # fmt: skip


def test_report_tables_declare_each_column_once(results):
    tgts = targets(results)
    lines = report._targets(report.Run(results, tgts, ""))
    header, rule, *rows = [line for line in lines if line.startswith("|")]
    assert header.count("|") == rule.count("|") == len(report.TARGET_COLUMNS) + 1
    assert all(r.count("|") >= len(report.TARGET_COLUMNS) + 1 for r in rows)
    marks = {re.split(r"(?<!\\)\|", r)[4].strip() for r in rows}  # "\|" is a pipe in a cell
    assert marks <= {"met", "**missed**", "not measured", "-"}
    text = report.markdown(results, tgts, "verdict")
    assert text.index("## Targets") < text.index("## Verdict") < text.index("## Side by side")
    assert "## Serving config search" not in text  # no search in these results


def _probed(results, probes):
    for point, ms in zip(results["points"], probes, strict=False):
        point["noise"]["probe_ms"] = ms


def test_noise_section_warns_when_the_hosts_speed_moved(results):
    _probed(results, [20.0, 21.0, 30.0])
    noise = report.noise_summary(results)
    assert (noise["probe_ms_min"], noise["probe_ms_max"], noise["host_drift"]) == (20, 30, 1.5)
    text = "\n".join(report._noise(report.Run(results, {}, "")))
    assert "20.0-30.0 ms (1.50x)" in text and "speed moved during the run" in text


def test_noise_section_is_quiet_on_a_steady_host_or_without_probes(results):
    text = "\n".join(report._noise(report.Run(results, {}, "")))
    assert report.noise_summary(results)["host_drift"] is None and "fixed loop" not in text
    _probed(results, [20.0, 21.0, 22.0])
    text = "\n".join(report._noise(report.Run(results, {}, "")))
    assert "20.0-22.0 ms (1.10x)" in text and "speed moved" not in text


def test_search_section_marks_candidates_refusing_the_largest_request(results):
    cand = {"stage": 1, "instances": 2, "max_queue_delay_us": 0, "intra_op_threads": 1,
            "throughput": 6000.0, "p50_ms": 2.0, "p99_ms": 5.0, "errors": 0}  # fmt: skip
    small = {**cand, "max_batch_size": 8, "preferred_batch_size": [], "accepts_largest": False}
    capped = {**cand, "max_batch_size": 32, "preferred_batch_size": [8], "accepts_largest": True}
    results["search"] = {
        "model": "default_pruned_int8", "concurrency": [16, 32], "p99_budget_ms": 50.0,
        "largest_request": 32, "method": "Staged", "candidates": [small, capped],
        "best": capped, "baseline": KNOBS, "applied": None,
    }  # fmt: skip
    tgts = targets(results)
    lines = report._search(report.Run(results, tgts, ""))
    assert "(c16, c32, p99 <= 50.0 ms)" in lines[0]
    rows = [line for line in lines if line.startswith("| 1 |")]
    assert rows[0].endswith("| no | no |") and rows[1].endswith("| yes | yes |")
    assert any("largest request the clients send (32 images" in line for line in lines)


def _raw_path(results, best_raw_ips=4000.0, pipeline=(3000.0, 4500.0)):
    """The raw path of one run: the ensemble over pruned_int8, its points, the in-process
    decode/preprocess rows, the pipeline shapes and perf_analyzer on the ensemble."""
    results["ensemble"] = {"name": "default", "preprocess": "default_preprocess",
                           "preprocess_instances": 2, "classifier": "default_pruned_int8",
                           "variant": "pruned_int8", "engine": "onnxruntime",
                           "images": ["a.png"] * 32}  # fmt: skip
    split = {"preprocess_cores": 0.8, "classifier_cores": 0.4, "server_cores": 0.3,
             "preprocess_queue_ms": 0.1, "preprocess_compute_infer_ms": 0.3,
             "classifier_queue_ms": 0.05, "classifier_compute_infer_ms": 0.2}  # fmt: skip
    results["points"] += [
        _point(c=1, rps=500.0, path="raw", p50_ms=1.5, **split),
        _point(c=16, rps=1500.0, path="raw", **split),
        _point(c=4, batch=32, rps=best_raw_ips / 32, path="raw", **split),
    ]
    results["inprocess"] += [
        {**_inprocess("pillow_decode", "decode", 32, 1, 10_000.0)},  # 0.1 ms an image
        {**_inprocess("contract_preprocess", "preprocess", 32, 1, 6250.0)},  # 0.16 ms
        {**_inprocess("contract_model_input", "model_input", 32, 1, 8000.0)},  # 0.125 ms
    ]
    results["raw_inprocess"] = [
        {"workers": w, "threads": t, "batch": 32, "engine": "onnxruntime", "images_per_s": ips,
         "batch_ms": 7.0, "noise": {"other_cores": 0.0}}
        for (w, t), ips in zip(((1, 2), (2, 1)), pipeline, strict=True)
    ]  # fmt: skip
    results["perf_analyzer_raw"] = [_check(32, 4, 4400.0, best_raw_ips, True)]


def test_raw_targets_compare_the_raw_path_with_its_own_baselines(results):
    _raw_path(results)
    t = targets(results)
    assert t["raw_vs_inprocess"]["value"] == pytest.approx(4000 / 4500, abs=1e-3)  # best shape
    assert t["raw_vs_inprocess"]["met"] is True
    assert "2 process(es) x 1 thread(s), batch 32" in t["raw_vs_inprocess"]["detail"]
    assert "1 process(es) x 2 thread(s), batch 32: 3000" in t["raw_vs_inprocess"]["detail"]
    # p50 1.5 - (the server's preprocessing, model_input 0.125, + pruned_int8 batch 1 at its
    # deployed 1 thread: 0.1) ms; preprocess_vs_decode keeps contract.preprocess
    assert t["raw_overhead_ms_c1"]["value"] == pytest.approx(1.5 - 0.125 - 0.1, abs=1e-3)
    assert t["preprocess_vs_decode"]["value"] == pytest.approx(1.6)
    assert t["preprocess_vs_decode"]["met"] is True
    assert t["vs_perf_analyzer_raw"]["value"] == pytest.approx(4000 / 4400, abs=1e-3)
    assert t["vs_perf_analyzer_raw"]["met"] is True
    tensor = t["raw_vs_tensor_c16"]
    assert tensor["value"] == pytest.approx(1500 / 6000, abs=1e-3) and tensor["met"] is None
    assert "decoding (the preprocess stubs) used 0.80 of the 2 cores (40%)" in tensor["detail"]


def test_overheads_name_their_sides_and_take_the_median_of_a_minus_b(results):
    _raw_path(results)
    c1, rows = overhead_sides(facts(results))
    assert (c1["path"], c1["concurrency"], c1["batch"]) == ("tensor", 1, 1)
    assert [(r["variant"], r["batch"], r["threads"]) for r in rows] == [("pruned_int8", 1, 1)]
    raw_c1, raw_rows = raw_overhead_sides(facts(results))
    assert (raw_c1["path"], raw_c1["concurrency"], raw_c1["batch"]) == ("raw", 1, 1)
    assert [r["kind"] for r in raw_rows] == ["model_input", "onnx"]
    # unpaired: 2.0 - 0.1 ms (missed) and 1.5 - 0.125 - 0.1 ms (met); paired, the other way
    results["paired"] = {
        "overhead_ms_c1": _paired([0.7, 0.8, 0.9], how="A - B"),
        "raw_overhead_ms_c1": _paired([1.6, 1.7, 2.9], how="A - B"),
    }
    t = targets(results)
    assert (t["overhead_ms_c1"]["value"], t["overhead_ms_c1"]["met"]) == (0.8, True)
    assert t["overhead_ms_c1"]["paired"]["unpaired"] == pytest.approx(1.9)
    assert (t["raw_overhead_ms_c1"]["value"], t["raw_overhead_ms_c1"]["met"]) == (1.7, False)
    assert "median of 3 paired rounds of A - B" in t["raw_overhead_ms_c1"]["detail"]
    del results["inprocess"][-1]  # no model_input row: no raw overhead to pair
    assert raw_overhead_sides(facts(results))[1] == []


def test_raw_points_leave_the_tensor_targets_alone(results):
    before = targets(results)
    _raw_path(results, best_raw_ips=50_000.0)  # faster than any tensor point, on purpose
    after = targets(results)
    for key in ("served_vs_inprocess", "overhead_ms_c1", "optimized_vs_eager", "vs_perf_analyzer"):
        assert after[key]["value"] == before[key]["value"], key
    assert after["raw_vs_inprocess"]["value"] == pytest.approx(50_000 / 4500, abs=1e-3)
    assert "50000 images/s" in verdict(results, after)  # the raw path's best, in its sentence


def test_raw_targets_missing_when_there_is_no_ensemble(results):
    t = targets(results)
    for key in ("raw_vs_inprocess", "raw_overhead_ms_c1", "vs_perf_analyzer_raw",
                "preprocess_vs_decode", "raw_vs_tensor_c16"):  # fmt: skip
        assert t[key]["value"] is None and t[key]["met"] is None, key
    assert report._raw_path(report.Run(results, t, "")) == []


def test_raw_section_and_what_limits_each_figure(results):
    _raw_path(results)
    results["raw_check"] = {"images": 16, "top1_agree": 16, "max_abs_logit_diff": 0.0,
                            "tolerance": 1e-3, "ok": True, "engine": "onnxruntime"}  # fmt: skip
    tgts = targets(results)
    run = report.Run(results, tgts, "")
    lines = report._raw_path(run)
    assert lines[0] == "## The raw path: encoded images to `default`"
    assert any("16/16 top-1 equal" in line and "agree." in line for line in lines)
    raw_rows = [line for line in lines if line.startswith("| http |")]
    assert len(raw_rows) == 5  # 3 raw points, then perf_analyzer and ours at its point
    assert any(
        "bare Pillow decode 0.1000 ms, contract.preprocess 0.1600 ms, contract.model_input "
        "(what the server's preprocess model runs) 0.1250 ms" in x
        for x in lines
    )
    limits = report._targets(run)
    assert any(x.startswith("- `raw_vs_tensor_c16`: on 2 shared cores") for x in limits)
    assert sum(x.startswith("- `") for x in limits) == len(TARGETS)
    inprocess = "\n".join(report._inprocess(run))
    assert "pillow_decode" not in inprocess  # per-image steps are the raw section's


def _engines(results, deployed, ort_rps=(1000.0, 1100.0), ov_rps=(1800.0, 1500.0)):
    results["engines"] = {"deployed": deployed, "variant": "pruned_int8", "model": "m_pruned_int8"}
    for c, o, v in zip((16, 32), ort_rps, ov_rps, strict=True):
        results["points"] += [
            _point(c=c, rps=o, config="engine_onnxruntime", section="engines"),
            _point(c=c, rps=v, config="engine_openvino", section="engines"),
        ]


def test_engine_gain_is_the_deployed_engine_against_onnx_runtime(results):
    assert targets(results)["engine_gain"]["value"] is None  # no engines section
    _engines(results, "openvino")
    t = targets(results)
    # the lowest over the concurrencies: 1500 / 1100 at c32
    assert t["engine_gain"]["value"] == round(1500 / 1100, 3) and t["engine_gain"]["met"] is False
    assert t["openvino_vs_onnxruntime"]["value"] == round(1500 / 1100, 3)


def test_engine_gain_is_one_when_onnx_runtime_is_deployed(results):
    _engines(results, "onnxruntime", ov_rps=(2000.0, 2400.0))
    t = targets(results)
    assert t["engine_gain"]["value"] == 1.0 and t["engine_gain"]["met"] is False
    assert (
        t["openvino_vs_onnxruntime"]["value"] == 2.0 and t["openvino_vs_onnxruntime"]["met"] is None
    )
    lines = report._engines(report.Run(results, t, ""))
    assert "deployed on onnxruntime" in lines[2]
    assert sum(line.startswith("| 16 |") or line.startswith("| 32 |") for line in lines) == 4
