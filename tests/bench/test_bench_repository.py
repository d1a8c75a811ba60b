"""What bench finds in a repository: variants on either engine, and the ensemble's steps."""

from __future__ import annotations

import pytest
from bench_helpers import MODEL, SERVED, build_run_and_repo

from bench.repository import (
    BenchRepoError,
    discover,
    find_ensemble,
    on_engine,
    serving,
    variation,
)
from serve.repository import add_preprocess_and_ensemble, read_config

# An OpenVINO variant as optimize writes it: NVIDIA's backend reads these names, and ours too.
OPENVINO = """\
backend: "openvino"
default_model_filename: "model.onnx"
parameters { key: "INFERENCE_NUM_THREADS" value: { string_value: "2" } }
parameters { key: "NUM_STREAMS" value: { string_value: "1" } }
"""


@pytest.fixture
def repo(tmp_path):
    _, repo = build_run_and_repo(tmp_path, variants=("fp32", "pruned_int8"))
    config = repo / f"{MODEL}_pruned_int8" / "config.pbtxt"
    lines = [x for x in config.read_text().splitlines() if "onnxruntime" not in x]
    lines = [x for x in lines if "thread_count" not in x]
    config.write_text("\n".join(lines) + "\n" + OPENVINO)
    return repo


def test_an_openvino_variant_is_a_classifier_on_its_engine(repo):
    _, _, variants = discover(repo, None)
    engines = {v.name: v.engine for v in variants}
    assert engines == {"fp32": "onnxruntime", "pruned_int8": "openvino"}
    ov = next(v for v in variants if v.engine == "openvino")
    assert ov.onnx.name == "model.onnx" and serving(ov.config)["intra_op_threads"] == 2
    changed = variation(ov.config, intra_op_threads=1)
    assert changed.parameters["INFERENCE_NUM_THREADS"].string_value == "1"
    assert "intra_op_thread_count" not in changed.parameters  # no ONNX Runtime key added
    serving(ov.config)
    assert set(ov.config.parameters) == {"INFERENCE_NUM_THREADS", "NUM_STREAMS"}  # read only


def test_streams_are_an_openvino_knob_only(repo):
    _, _, variants = discover(repo, None)
    by_engine = {v.engine: v for v in variants}
    ov = variation(by_engine["openvino"].config, streams=2)
    assert ov.parameters["NUM_STREAMS"].string_value == "2" and serving(ov)["streams"] == 2
    ort = by_engine["onnxruntime"].config
    assert serving(variation(ort, streams=2)) == serving(ort)  # nothing to vary: searched once
    assert "NUM_STREAMS" not in variation(ort, streams=2).parameters
    assert serving(ort)["streams"] is None


def test_the_same_artifact_on_the_other_engine_keeps_instances_threads_and_batching(repo):
    _, _, variants = discover(repo, None)
    ort = next(v for v in variants if v.engine == "onnxruntime").config
    base = variation(ort, instances=3, intra_op_threads=2, max_queue_delay_us=100)
    ov = on_engine(base, "openvino")
    assert base.backend == "onnxruntime"  # a copy: the config it was given is untouched
    assert ov.backend == "openvino" and ov.default_model_filename == "model.onnx"
    assert ov.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    assert ov.parameters["ENABLE_BATCH_PADDING"].string_value == "YES"  # as optimize writes
    assert "intra_op_thread_count" not in ov.parameters
    same = ("instances", "intra_op_threads", "max_queue_delay_us", "max_batch_size")
    assert {k: serving(ov)[k] for k in same} == {k: serving(base)[k] for k in same}
    back = on_engine(ov, "onnxruntime")
    assert back.backend == "onnxruntime" and set(back.parameters) == {
        "intra_op_thread_count",
        "inter_op_thread_count",
    }
    assert serving(back) == serving(base)


def test_the_ensemble_and_its_two_steps_are_found(repo):
    assert find_ensemble(repo, MODEL) is None  # no ensemble yet: no raw path
    add_preprocess_and_ensemble(repo, SERVED, f"{MODEL}_pruned_int8", 32, instances=3)
    e = find_ensemble(repo, MODEL)
    assert (e.preprocess, e.classifier, e.input_name) == (
        f"{MODEL}_preprocess",
        f"{MODEL}_pruned_int8",
        "image",
    )
    assert serving(e.preprocess_config)["instances"] == 3 and e.max_batch_size == 32
    assert e.outputs == ["logits"]  # the classifier's config lists logits only here


def test_a_model_named_like_a_classifier_is_no_ensemble(repo):
    (repo / MODEL).mkdir()
    (repo / MODEL / "config.pbtxt").write_text(
        (repo / f"{MODEL}_fp32" / "config.pbtxt").read_text().replace(f"{MODEL}_fp32", MODEL)
    )
    with pytest.raises(BenchRepoError, match="expected an ensemble of two steps"):
        find_ensemble(repo, MODEL)
    assert read_config(repo / MODEL / "config.pbtxt").backend == "onnxruntime"
