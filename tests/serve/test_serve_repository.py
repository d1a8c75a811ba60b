"""serve.repository: preprocess model + ensemble configs that Triton's own schema accepts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from google.protobuf import text_format
from serve_helpers import CLASSIFIER, CLASSIFIER_CONFIG, MAX_BATCH, SPEC, write_classifier
from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from contract import load_spec
from serve.repository import (
    RepositoryError,
    add_preprocess_and_ensemble,
    instance_groups,
    read_config,
)


def parse(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())  # strict: unknown fields are errors


@pytest.fixture
def repo(tmp_path):
    write_classifier(tmp_path)
    return tmp_path


def test_handwritten_classifier_config_parses():
    config = parse(CLASSIFIER_CONFIG)
    assert config.backend == "onnxruntime"
    assert config.parameters["intra_op_thread_count"].string_value == "1"


def test_writes_preprocess_and_ensemble(repo):
    names = add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, MAX_BATCH)
    assert names == ["tiny_preprocess", "tiny"]
    configs = {p.parent.name: parse(p.read_text()) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == {CLASSIFIER, *names}

    pre = configs["tiny_preprocess"]
    assert (pre.backend, pre.max_batch_size) == ("python", MAX_BATCH)
    assert list(pre.output[0].dims) == [1, 28, 28] and pre.output[0].name == SPEC.input_name
    assert load_spec(repo / "tiny_preprocess") == SPEC
    assert (repo / "tiny_preprocess/1/model.py").is_file()
    assert (repo / "tiny_preprocess/1/contract/preprocess.py").is_file()

    ens = configs["tiny"]
    assert ens.platform == "ensemble" and ens.input[0].name == "image"
    assert ens.output[0].label_filename == "labels.txt"
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_preprocess", CLASSIFIER]
    assert steps[0].output_map[SPEC.input_name] == steps[1].input_map[SPEC.input_name]
    assert (repo / "tiny/labels.txt").read_text().splitlines() == list(SPEC.labels)
    assert (repo / "tiny/1").is_dir()


def test_rewrite_replaces_whole_dirs(repo):
    add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, MAX_BATCH)
    (repo / "tiny_preprocess/stale.txt").write_text("old")
    add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, 4)
    assert not (repo / "tiny_preprocess/stale.txt").exists()
    assert parse((repo / "tiny/config.pbtxt").read_text()).max_batch_size == 4
    assert sorted(p.name for p in repo.iterdir()) == sorted([CLASSIFIER, "tiny", "tiny_preprocess"])


def test_bundled_contract_imports_on_its_own(repo, tmp_path_factory):
    """The stub's Python finds `contract` beside model.py, not via our project or venv."""
    add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, MAX_BATCH)
    version = repo / "tiny_preprocess/1"
    code = (
        f"import sys; sys.path.insert(0, {str(version)!r}); "
        "from contract import load_spec, preprocess; import contract; print(contract.__file__)"
    )
    cwd = tmp_path_factory.mktemp("elsewhere")
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, text=True
    )
    assert out.stdout.startswith(str(version)), out.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"height": 32}, "dims must be"),
        ({"input_name": "pixels"}, "needs input 'pixels'"),
        ({"name": CLASSIFIER}, "would be overwritten"),
        ({"dtype": "uint8"}, r"must be TYPE_UINT8 \(the spec's dtype uint8\)"),  # it takes FP32
    ],
)
def test_rejects_a_spec_that_does_not_fit(repo, change, message):
    spec = dataclasses.replace(SPEC, **change)
    with pytest.raises(RepositoryError, match=message):
        add_preprocess_and_ensemble(repo, spec, CLASSIFIER, MAX_BATCH)


def test_rejects_bad_batch_and_missing_classifier(repo):
    with pytest.raises(RepositoryError, match="max_batch_size 32 < the ensemble's 64"):
        add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, 64)
    with pytest.raises(RepositoryError, match="not found"):
        add_preprocess_and_ensemble(repo, SPEC, "nope", MAX_BATCH)
    with pytest.raises(RepositoryError, match="does not exist"):
        add_preprocess_and_ensemble(repo / "missing", SPEC, CLASSIFIER, MAX_BATCH)


def test_preprocessing_runs_in_as_many_stubs_as_asked(tmp_path):
    write_classifier(tmp_path)
    add_preprocess_and_ensemble(tmp_path, SPEC, CLASSIFIER, MAX_BATCH, instances=3)
    config = read_config(tmp_path / f"{SPEC.name}_preprocess" / "config.pbtxt")
    groups = [(g.count, g.rate_limiter.priority) for g in config.instance_group]
    assert groups == [(1, 1), (2, 1000)]  # a warm instance first


@pytest.mark.parametrize("count", [1, 2, 4])
def test_instance_groups_prefer_the_first_instance(count):
    gpu = ModelInstanceGroup.KIND_GPU
    groups = instance_groups(count, gpu)
    assert sum(g.count for g in groups) == count and {g.kind for g in groups} == {gpu}
    first, *others = groups
    assert (first.count, first.rate_limiter.priority) == (1, 1)
    assert all(g.rate_limiter.priority == 1000 for g in others)  # lower runs first
