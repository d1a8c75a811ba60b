"""client/verify.py on the tiny repository: full agreement, and a caught disagreement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from client_helpers import ENSEMBLE, random_image, write_png
from serve_helpers import CLASSIFIER, OV, SPEC

from client import verify
from contract import preprocess, save_spec

TEST_PER_CLASS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A pre-split ImageFolder with the spec's classes: 1 training and 3 test images each."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(2)
    for label in SPEC.labels:
        write_png(root / "train" / label / "0.png", random_image(rng))
        for i in range(TEST_PER_CLASS):
            write_png(root / "test" / label / f"{i}.png", random_image(rng, rgb=i == 2))
    return root


def onnxruntime_top1(ort_session, data: Path) -> float:
    files = sorted((data / "test").glob("*/*.png"))
    x = np.stack([preprocess(f, SPEC) for f in files])
    predicted = ort_session.run(["logits"], {"input": x})[0].argmax(axis=1)
    truth = np.array([SPEC.labels.index(f.parent.name) for f in files])
    return round(float((predicted == truth).mean()), 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data, ort_session) -> Path:
    """A run folder as optimize leaves it: the spec and an honest report on the test split."""
    path = tmp_path_factory.mktemp("run")
    save_spec(SPEC, path / "model_spec.json")
    row = {
        "name": "fp32",
        "target": "cpu",
        "precision": "fp32",
        "pruned": False,
        "top1": onnxruntime_top1(ort_session, data),
        "deployed": True,
        "triton_model": CLASSIFIER,
    }
    report = {
        "model": SPEC.name,
        "test_images": len(SPEC.labels) * TEST_PER_CLASS,
        "variants": [row],
        "best_cpu_variant": row,
        "config": {"data": {"root": str(data)}},
    }
    (path / "optimize_report.json").write_text(json.dumps(report))
    return path


def test_missing_report_says_to_run_optimize(capsys, tmp_path):
    save_spec(SPEC, tmp_path / "model_spec.json")
    assert verify.main(["--run", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"error: {tmp_path / 'optimize_report.json'} not found: run `make optimize` first\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_full_agreement_on_the_whole_test_split(
    capsys, server, model_repo, run, tmp_path, protocol
):
    out = tmp_path / "verify.json"
    url = server.http_url if protocol == "http" else server.grpc_url
    argv = ["--run", run, "--repo", model_repo, "--url", url, "--protocol", protocol, "--out", out]
    assert verify.main([str(a) for a in [*argv, "--batch-size", "4"]]) == 0
    summary = json.loads(out.read_text())
    n = len(SPEC.labels) * TEST_PER_CLASS
    assert summary["passed"] is True
    assert (summary["ensemble"], summary["classifier"], summary["variant"]) == (
        ENSEMBLE,
        CLASSIFIER,
        "fp32",
    )
    assert summary["agreement"] == {
        "raw_vs_local": n,
        "tensor_vs_local": n,
        "raw_vs_tensor": n,
        "of": n,
    }
    assert max(summary["max_abs_diff"].values()) <= 1e-5
    acc = summary["top1_on_sample"]
    assert acc["raw"] == acc["tensor"] == acc["local"] == summary["report_top1"]
    assert summary["test_images"] == summary["sampled"] == n and summary["skipped"] == []
    assert "verify: PASS" in capsys.readouterr().out


@pytest.mark.slow
def test_a_deterministic_sample(server, model_repo, run, tmp_path):
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        argv = ["--run", run, "--repo", model_repo, "--url", server.http_url, "--limit", "7"]
        assert verify.main([str(a) for a in [*argv, "--out", out]]) == 0
    first, second = (json.loads(o.read_text()) for o in outs)
    assert first["sampled"] == 7 and first["top1_on_sample"] == second["top1_on_sample"]


def _perturbed_repo(model_repo: Path, tmp_path: Path) -> Path:
    """A copy of the repository whose classifier's output bias no longer matches the served one."""
    import onnx
    from onnx import numpy_helper

    copy = tmp_path / "repo"
    shutil.copytree(model_repo / CLASSIFIER, copy / CLASSIFIER)
    path = copy / CLASSIFIER / "1" / "model.onnx"
    model = onnx.load(str(path))
    bias = next(t for t in model.graph.initializer if list(t.dims) == [len(SPEC.labels)])
    changed = numpy_helper.to_array(bias) + np.linspace(0, 5, len(SPEC.labels), dtype=np.float32)
    bias.CopyFrom(numpy_helper.from_array(changed, bias.name))
    onnx.save(model, str(path))
    return copy


@pytest.mark.slow
def test_a_different_local_model_fails_the_check(capsys, server, model_repo, run, tmp_path):
    out = tmp_path / "verify.json"
    other = _perturbed_repo(model_repo, tmp_path)
    argv = ["--run", run, "--repo", other, "--url", server.http_url, "--out", out]
    assert verify.main([str(a) for a in argv]) == 1
    summary = json.loads(out.read_text())
    assert summary["passed"] is False
    assert summary["max_abs_diff"]["raw_vs_local"] > 1
    assert summary["agreement"]["raw_vs_tensor"] == summary["agreement"]["of"]
    assert "error: the server disagrees with onnxruntime" in capsys.readouterr().err


@pytest.mark.slow
def test_an_openvino_served_classifier_is_checked_against_openvino_in_process(
    capsys, ov_server, ov_repo, run, tmp_path
):
    out = tmp_path / "verify.json"
    argv = ["--run", run, "--repo", ov_repo, "--url", ov_server.http_url, "--out", out]
    assert verify.main([str(a) for a in [*argv, "--batch-size", "4"]]) == 0
    summary = json.loads(out.read_text())
    assert (summary["classifier"], summary["engine"]) == (OV, "openvino")
    assert summary["passed"] and max(summary["max_abs_diff"].values()) <= 1e-5
    assert "local openvino" in capsys.readouterr().out
