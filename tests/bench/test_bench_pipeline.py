"""The raw path's in-process baseline: contract.preprocess then the model, in 1 and 2
processes, on either engine a variant may be deployed with."""

from __future__ import annotations

import pytest
from bench_helpers import MODEL, add_raw_path, build_run_and_repo

from bench import pipeline
from bench.config import NoiseConfig

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
