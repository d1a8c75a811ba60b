"""The in-process baselines run as processes: the raw path's (contract.model_input then the
model, in 1 and 2 processes) and the tensor path's (the model alone in the deployed instances x
threads), on either engine a variant may be deployed with."""

from __future__ import annotations

import json

import pytest
from bench_helpers import MODEL, add_raw_path, build_run_and_repo

from bench import pipeline
from bench.config import NoiseConfig
from bench.run import main
from contract import load_spec

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_pipeline_shapes_run_on_the_variants_engine(tmp_path, engine):
    run, repo = build_run_and_repo(tmp_path)
    data = add_raw_path(tmp_path, run, repo)
    files = sorted(data.glob("test/*/*.png"))[:6]
    model = repo / f"{MODEL}_int8" / "1" / "model.onnx"
    shapes = pipeline.shapes(model, engine, batch=4, threads=2, cores=2)
    assert [(s["workers"], s["threads"], s["batch"]) for s in shapes] == [(1, 2, 4), (2, 1, 4)]
    spec = repo / f"{MODEL}_int8" / "model_spec.json"
    rows = pipeline.measure(shapes, files, spec, 0.3, NoiseConfig(busy_cores=99), log=print)
    for row in rows:
        assert row["engine"] == engine and row["images_per_s"] > 0 and row["batch_ms"] > 0
        assert row["attempts"] == 1 and row["noise"]["seconds"] >= 0.3


def test_a_worker_that_fails_is_a_one_line_error(tmp_path):
    run, repo = build_run_and_repo(tmp_path)
    data = add_raw_path(tmp_path, run, repo)
    files = sorted(data.glob("test/*/*.png"))[:2]
    shape = pipeline.shapes(tmp_path / "missing.onnx", "onnxruntime", 1, 1, cores=1)
    spec = repo / f"{MODEL}_int8" / "model_spec.json"
    with pytest.raises(pipeline.PipelineError, match="in-process pipeline 1 process"):
        pipeline.measure(shape, files, spec, 0.2, NoiseConfig(busy_cores=99), log=print)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_the_tensor_shape_runs_the_model_alone_in_n_processes(tmp_path, engine):
    _, repo = build_run_and_repo(tmp_path)
    folder = repo / f"{MODEL}_int8"
    spec = load_spec(folder / "model_spec.json")
    shape = pipeline.tensor_shape(folder / "1" / "model.onnx", engine, 4, 2, 1, spec)
    assert (shape["input_dtype"], shape["input_dims"]) == ("uint8", [1, 28, 28])
    logged = []
    (row,) = pipeline.measure([shape], [], None, 0.3, NoiseConfig(busy_cores=99), logged.append)
    assert (row["workers"], row["threads"], row["batch"], row["engine"]) == (2, 1, 4, engine)
    assert row["images_per_s"] > 0 and row["noise"]["seconds"] >= 0.3
    assert "2 process(es) x 1 thread(s), batch 4, model only" in logged[-1]


def _inprocess_run(tmp_path, instances: int) -> dict:
    """`--sections inprocess` on a repository whose primary (int8) runs `instances` x 1 thread."""
    run, repo = build_run_and_repo(tmp_path)
    config = repo / f"{MODEL}_int8" / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1", f"count: {instances}"))
    out = tmp_path / "results"
    code = main(
        ["--repo", str(repo), "--run", str(run), "--out", str(out), "--sections", "inprocess",
         "inprocess.batch_sizes=[1,4]", "inprocess.threads=[1,2]", "inprocess.eager=false",
         "inprocess.min_rounds=2", "inprocess.max_time_s=0.02", "inprocess.warmup_iterations=1",
         "inprocess.processes_s=0.3", "noise.retries=0"]
    )  # fmt: skip
    assert code == 0
    return json.loads((out / "latest" / "results.json").read_text())


def test_the_tensor_baseline_takes_the_deployed_instances_and_threads(tmp_path):
    results = _inprocess_run(tmp_path, instances=2)
    (row,) = results["tensor_inprocess"]
    one_thread = [r for r in results["inprocess"] if r["variant"] == "int8" and r["threads"] == 1]
    fastest = max(one_thread, key=lambda r: r["throughput"])["batch"]
    assert (row["workers"], row["threads"], row["batch"]) == (2, 1, fastest)
    assert row["model"].endswith(f"{MODEL}_int8/1/model.onnx") and not row["decode"]


def test_one_deployed_instance_needs_no_process_baseline(tmp_path):
    assert _inprocess_run(tmp_path, instances=1)["tensor_inprocess"] == []
