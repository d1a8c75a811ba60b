import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from optimize import repository
from optimize.config import RepositoryConfig
from optimize.repository import RepoModel, write_repository


def _parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _models(tiny_onnx, tiny_spec):
    return [
        RepoModel(f"{tiny_spec.name}_fp32", tiny_onnx),
        RepoModel(f"{tiny_spec.name}_trt", tiny_onnx, tensorrt=True),
    ]


def test_configs_parse_with_tritons_protobuf_and_match_the_spec(tiny_onnx, tiny_spec, tmp_path):
    cfg = RepositoryConfig(max_batch_size=16, preferred_batch_size=[4, 8], intra_op_threads=2)
    repo = tmp_path / "repo"
    names = write_repository(repo, _models(tiny_onnx, tiny_spec), tiny_spec, cfg, None)
    assert names == [f"{tiny_spec.name}_fp32", f"{tiny_spec.name}_trt"]
    for name in names:
        config = _parse(repo / name / "config.pbtxt")
        assert config.name == name and config.max_batch_size == 16
        (inp,) = config.input
        logits, probs = config.output
        assert inp.name == tiny_spec.input_name and inp.data_type == model_config_pb2.TYPE_FP32
        assert list(inp.dims) == [tiny_spec.channels, tiny_spec.height, tiny_spec.width]
        assert (logits.name, probs.name) == (tiny_spec.output_name, tiny_spec.probabilities_name)
        for out in (logits, probs):
            assert list(out.dims) == [tiny_spec.num_classes] and out.label_filename == "labels.txt"
        labels = (repo / name / "labels.txt").read_text().splitlines()
        assert labels == list(tiny_spec.labels)
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
        assert config.dynamic_batching.max_queue_delay_microseconds == 0
        assert (repo / name / "model_spec.json").is_file()
    fp32 = _parse(repo / names[0] / "config.pbtxt")
    assert fp32.backend == "onnxruntime"
    assert fp32.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert fp32.parameters["intra_op_thread_count"].string_value == "2"
    assert fp32.parameters["inter_op_thread_count"].string_value == "1"
    assert (repo / names[0] / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    trt = _parse(repo / names[1] / "config.pbtxt")
    assert trt.platform == "tensorrt_plan"
    assert trt.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (repo / names[1] / "model_qdq.onnx").is_file()
    assert not (repo / names[1] / "1").exists()  # no plan without a GPU


def test_defaults_batch_whatever_queued_on_two_instances(tiny_onnx, tiny_spec, tmp_path):
    repo = tmp_path / "repo"
    (name,) = write_repository(repo, _models(tiny_onnx, tiny_spec)[:1], tiny_spec,
                               RepositoryConfig(), None)  # fmt: skip
    config = _parse(repo / name / "config.pbtxt")
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == []
    # two instances, the first preferred while free (serve.repository.instance_groups)
    groups = [(g.count, g.rate_limiter.priority) for g in config.instance_group]
    assert groups == [(1, 1), (1, 1000)]


def test_a_failure_mid_write_leaves_the_old_repository(tiny_onnx, tiny_spec, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    write_repository(repo, _models(tiny_onnx, tiny_spec)[:1], tiny_spec, RepositoryConfig(), None)
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    calls = []

    def copy_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the first model is complete, the second half-written
            raise OSError("disk full (injected)")
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(repository.shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError, match="injected"):
        write_repository(repo, _models(tiny_onnx, tiny_spec), tiny_spec, RepositoryConfig(), None)
    after = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staged leftovers


def test_the_ensemble_points_at_the_chosen_classifier(tiny_onnx, tiny_spec, tmp_path):
    repo = tmp_path / "repo"
    classifier = f"{tiny_spec.name}_fp32"
    names = write_repository(
        repo, _models(tiny_onnx, tiny_spec)[:1], tiny_spec, RepositoryConfig(), classifier
    )
    assert tiny_spec.name in names and f"{tiny_spec.name}_preprocess" in names
    ensemble = _parse(repo / tiny_spec.name / "config.pbtxt")
    steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
    assert classifier in steps


def test_a_second_run_keeps_the_first_runs_models(tiny_onnx, tiny_spec, tmp_path):
    from dataclasses import replace

    repo = tmp_path / "repo"
    first = write_repository(repo, _models(tiny_onnx, tiny_spec)[:1], tiny_spec,
                             RepositoryConfig(), f"{tiny_spec.name}_fp32")  # fmt: skip
    (repo / "operators_own").mkdir()  # a model someone else put there stays too
    other = replace(tiny_spec, name="photo")
    second = write_repository(repo, [RepoModel("photo_fp32", tiny_onnx)], other,
                              RepositoryConfig(), "photo_fp32")  # fmt: skip
    assert sorted(p.name for p in repo.iterdir()) == sorted([*first, *second, "operators_own"])
    # Re-running the first run replaces its own models only: a variant it no longer
    # deploys disappears, the other run's stay.
    again = write_repository(repo, [RepoModel(f"{tiny_spec.name}_int8", tiny_onnx)], tiny_spec,
                             RepositoryConfig(), None)  # fmt: skip
    assert sorted(p.name for p in repo.iterdir()) == sorted([*again, *second, "operators_own"])


def test_an_openvino_variant_gets_the_native_backends_config(tiny_onnx, tiny_spec, tmp_path):
    repo = tmp_path / "repo"
    model = RepoModel(f"{tiny_spec.name}_int8", tiny_onnx, engine="openvino")
    write_repository(repo, [model], tiny_spec, RepositoryConfig(intra_op_threads=2), None)
    config = _parse(repo / model.name / "config.pbtxt")
    assert config.backend == "openvino" and config.default_model_filename == "model.onnx"
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"INFERENCE_NUM_THREADS": "2", "NUM_STREAMS": "1",
                      "PERFORMANCE_HINT": "LATENCY", "ENABLE_BATCH_PADDING": "YES"}  # fmt: skip
    assert (repo / model.name / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
