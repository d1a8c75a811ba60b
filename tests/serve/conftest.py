"""Serve fixtures: a tiny ONNX classifier in a tmp model repository, and a real Triton on it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from serve_helpers import ADMIN_KEY, CLASSIFIER, MAX_BATCH, SPEC, free_ports, write_classifier

from serve.repository import add_preprocess_and_ensemble
from serve.server import TritonServer


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
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, 28, 28),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


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
    http, grpc, metrics = free_ports(3)
    with TritonServer(
        model_repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        admin_key=ADMIN_KEY,
        backend_dir=backend_dir,
        log_file=tmp_path_factory.mktemp("logs") / "server.log",
        ready_timeout=60,
    ) as s:
        yield s
