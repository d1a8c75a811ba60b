"""Shared fixtures: a tiny Fashion-MNIST ImageFolder and a model trained on it for one epoch;
a tiny ONNX classifier in a model repository (with preprocessing and ensemble) served by a
real Triton on free ports; the same file on the openvino backend in a second repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import (
    CLASSIFIER,
    MAX_BATCH,
    OV,
    SHM_KEY,
    SPEC,
    STRICT,
    STRICT_BATCH,
    export_onnx,
    local_server,
    openvino_config,
    write_classifier,
)

from serve.repository import add_preprocess_and_ensemble
from train.fashion_mnist import SOURCE, build

TINY_PARAMS = {"train_per_class": 40, "test_per_class": 20, "val_fraction": 0.25, "seed": 0}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """400 training images as {train,val,test}/<class>/*.png (300 / 100 / 200)."""
    if not (SOURCE / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{SOURCE} missing: run `make setup` (installs dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("data") / "fashion-mnist"
    build(out, TINY_PARAMS)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """runs/tiny/ from one epoch of the real train stage on tiny_data."""
    from train.run import main

    out = tmp_path_factory.mktemp("runs")
    args = ["--data", str(tiny_data), "--name", "tiny", "--epochs", "1",
            f"out_dir={out}", "optim.batch_size=32"]  # fmt: skip
    assert main(args) == 0
    return out / "tiny"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A 2-conv classifier: input "input" [N,1,28,28] -> "logits" [N,10], dynamic batch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def ort_session(tiny_onnx):
    import onnxruntime as ort

    return ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory, tiny_onnx) -> Path:
    repo = tmp_path_factory.mktemp("model_repository")
    write_classifier(repo, tiny_onnx)
    add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, MAX_BATCH)
    return repo


@pytest.fixture(scope="session")
def backend_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve") / "backends"


@pytest.fixture(scope="session")
def server(model_repo, backend_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    with local_server(model_repo, backend_dir, logs, shm_key=SHM_KEY) as s:
        yield s


@pytest.fixture
def fresh_server(model_repo, backend_dir, tmp_path):
    """A server of its own, for a test that changes what the server runs."""
    with local_server(model_repo, backend_dir, tmp_path) as s:
        yield s


@pytest.fixture(scope="session")
def ov_repo(tmp_path_factory, tiny_onnx) -> Path:
    """tiny_onnx as OpenVINO models (OV with batch padding, STRICT without) and the ensemble
    `tiny` over OV."""
    repo = tmp_path_factory.mktemp("openvino_repository")
    for name, max_batch, padding in ((OV, 32, True), (STRICT, STRICT_BATCH, False)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(openvino_config(name, max_batch, padding))
        (repo / name / "labels.txt").write_text("".join(f"{c}\n" for c in SPEC.labels))
        (repo / name / "1" / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    add_preprocess_and_ensemble(repo, SPEC, OV, MAX_BATCH)
    return repo


@pytest.fixture(scope="session")
def ov_server(ov_repo, backend_dir, tmp_path_factory):
    with local_server(ov_repo, backend_dir, tmp_path_factory.mktemp("openvino_logs")) as s:
        yield s
