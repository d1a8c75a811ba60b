"""A short real raw-path sweep (what CI runs): encoded test images through the ensemble of a
tiny repository, HTTP and gRPC, single images and a client batch, beside the tensor path;
perf_analyzer with BYTES input; the in-process baselines. Plumbing and answers, never speed."""

from __future__ import annotations

import json

import pytest
from bench_helpers import MODEL, add_raw_path, build_run_and_repo

from bench.repository import serving
from bench.run import main
from serve.repository import read_config

pytestmark = pytest.mark.slow
SHORT = ["windows.warmup_s=0.1", "windows.window_s=0.2", "windows.max_s=0.6", "noise.retries=0"]


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    run, repo = build_run_and_repo(root)
    add_raw_path(root, run, repo)
    out = root / "results"
    code = main(
        ["--repo", str(repo), "--run", str(run), "--out", str(out),
         "--sections", "inprocess,raw,perf_analyzer,search,replicas,paired", "--apply", *SHORT,
         "inprocess.batch_sizes=[1,4]", "inprocess.threads=[1]", "inprocess.eager=false",
         "inprocess.min_rounds=2", "inprocess.max_time_s=0.02", "inprocess.warmup_iterations=1",
         "served.compare_concurrency=4", "raw.images=12", "raw.check_images=12",
         "raw.concurrency=[1,4]", "raw.grpc_concurrency=[2]", "raw.client_batches=[4]",
         "raw.batch_concurrency=[1]", "raw.pipeline_s=0.3",
         "perf_analyzer.measurement_ms=300", "perf_analyzer.max_trials=3",
         # the search: one classifier config, then the preprocess model's instance count
         "search.instances=[1]", "search.max_queue_delay_us=[0]", "search.threads=[1]",
         "search.preferred_batch_sizes=[[]]", "search.concurrency=[2]", "search.p99_ms=100000",
         "search.preprocess_instances=[2,1]",
         "replicas.counts=[1,2]", "replicas.concurrency=[2]", "paired.rounds=2"]
    )  # fmt: skip
    latest = out / "latest"
    results = json.loads((latest / "results.json").read_text())
    return code, results, json.loads((latest / "summary.json").read_text()), latest, repo


def test_every_raw_point_is_measured_without_errors(raw_run):
    code, results, *_ = raw_run
    assert code == 0 and results["errors"] == {}, results["errors"]
    raw = [p for p in results["points"] if p["path"] == "raw" and p["section"] == "raw"]
    assert {(p["protocol"], p["concurrency"], p["batch"]) for p in raw} >= {
        ("http", 1, 1), ("http", 4, 1), ("grpc", 2, 1), ("http", 1, 4),
    }  # fmt: skip
    for p in raw:
        assert p["requests"] > 0 and p["errors"] == 0 and p["target"].startswith("ensemble")
        # each step of the ensemble ran, and its processes' CPU was read
        assert p["preprocess_compute_infer_ms"] > 0 and p["classifier_compute_infer_ms"] > 0
        assert p["preprocess_cores"] is not None and p["classifier_cores"] is not None
    (batched,) = [p for p in raw if p["batch"] == 4]
    assert batched["classifier_avg_batch"] >= 4  # the server saw 4 images a request
    tensor = [p for p in results["points"] if p["path"] == "tensor" and p["section"] == "raw"]
    assert [(p["variant"], p["concurrency"]) for p in tensor] == [("int8", 4)]  # same classifier


def test_answers_through_the_ensemble_match_in_process(raw_run):
    _, results, *_ = raw_run
    ensemble = results["ensemble"]
    assert (ensemble["name"], ensemble["classifier"], ensemble["variant"]) == (
        MODEL,
        f"{MODEL}_int8",
        "int8",
    )
    assert ensemble["preprocess"] == f"{MODEL}_preprocess" and len(ensemble["images"]) == 12
    assert all("/test/" in path for path in ensemble["images"])  # the run's test split
    check = results["raw_check"]
    assert check["images"] == 12 and check["top1_agree"] == 12 and check["ok"]


def test_raw_targets_and_baselines_are_in_the_summary(raw_run):
    _, results, summary, latest, _ = raw_run
    for key in ("raw_vs_inprocess", "raw_overhead_ms_c1", "vs_perf_analyzer_raw",
                "preprocess_vs_decode", "raw_vs_tensor_c4"):  # fmt: skip
        assert summary[key] is not None, (key, summary["targets"][key])
    kinds = {r["kind"] for r in results["inprocess"]}
    assert kinds == {"onnx", "decode", "preprocess", "model_input"}
    shapes = {(r["workers"], r["threads"]) for r in results["raw_inprocess"]}
    assert (1, 1) in shapes and all(r["images_per_s"] > 0 for r in results["raw_inprocess"])
    checks = results["perf_analyzer_raw"]  # at c4 x1, and at our best raw point if elsewhere
    assert (checks[0]["concurrency"], checks[0]["batch"]) == (4, 1) and len(checks) <= 2
    assert sum(x["best"] for x in checks) == 1
    for pa in checks:
        assert pa["images_per_s"] > 0 and "--input-data" in pa["command"]
    assert (latest / "perf_analyzer_raw_input.json").is_file()
    text = (latest / "report.md").read_text()
    assert f"## The raw path: encoded images to `{MODEL}`" in text


def test_raw_targets_in_paired_rounds(raw_run):
    _, results, summary, _, _ = raw_run
    for key, how in (("raw_vs_inprocess", "A / B"), ("raw_overhead_ms_c1", "A - B"),
                     ("vs_perf_analyzer_raw", "A / B")):  # fmt: skip
        pair = results["paired"][key]
        assert pair["how"] == how and [r["first"] for r in pair["rounds"]] == ["a", "b"], key
        assert summary[key] == pair["median"], key
    # the overhead's in-process side: contract.model_input + the classifier at batch 1, in ms
    for r in results["paired"]["raw_overhead_ms_c1"]["rounds"]:
        assert 0 < r["b"] < r["a"] < 1000 and r["value"] == pytest.approx(r["a"] - r["b"], abs=2e-3)
    assert "model_input" in results["paired"]["raw_overhead_ms_c1"]["b"]


def test_search_tunes_the_preprocess_instances_and_applies_the_winner(raw_run):
    _, results, _, latest, repo = raw_run
    pre = results["search"]["preprocess"]
    assert pre["model"] == f"{MODEL}_preprocess" and pre["deployed"] == 1
    assert [c["preprocess_instances"] for c in pre["candidates"]] == [2, 1]
    for c in pre["candidates"]:  # measured through the ensemble, with its decoding CPU
        (p,) = c["points"]
        assert (
            p["path"] == "raw"
            and p["requests"] > 0
            and p["preprocess_instances"] == (c["preprocess_instances"])
        )
    best = pre["best"]["preprocess_instances"]
    written = serving(read_config(repo / f"{MODEL}_preprocess" / "config.pbtxt"))
    assert pre["applied"] and written["instances"] == best
    assert "Then `tiny_preprocess`'s instance count" in (latest / "report.md").read_text()


def test_one_and_two_replicas_on_the_same_cores(raw_run):
    _, results, summary, latest, _ = raw_run
    points = [p for p in results["points"] if p["section"] == "replicas"]
    assert {(p["replicas"], p["path"]) for p in points} == {
        (n, path) for n in (1, 2) for path in ("raw", "tensor")
    }
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in points)
    spread = {r["replicas"]: r["requests_per_replica"] for r in results["replicas"]}
    assert len(spread[1]) == 1 and len(spread[2]) == 2
    assert min(spread[2]) > 0.3 * max(spread[2])  # each request to the next replica in turn
    assert "## Replicas on the same" in (latest / "report.md").read_text()
    block = summary["replicas"]  # what a reader scales to N machines from
    assert {(x["replicas"], x["path"]) for x in block["points"] if x["vs_one_replica"] == 1.0} >= {
        (1, "raw"),
        (1, "tensor"),
    }
    assert block["requests_per_replica"] == results["replicas"]
