"""Client fixtures: the serve tests' tiny repository on a real Triton, and folders of images."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

# The serve tests' helpers (tiny spec, classifier config, ports) are shared, not copied;
# pytest puts their folder on sys.path only when it collects serve tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from client_helpers import random_image, write_png  # noqa: E402
from serve_helpers import ADMIN_KEY, CLASSIFIER, MAX_BATCH, SPEC, free_ports, write_classifier  # noqa: E402

from serve.repository import add_preprocess_and_ensemble  # noqa: E402
from serve.server import TritonServer  # noqa: E402


@pytest.fixture(scope="session")
def classifier_onnx(tmp_path_factory) -> Path:
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
def ort_session(classifier_onnx):
    import onnxruntime as ort

    return ort.InferenceSession(str(classifier_onnx), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def repo(tmp_path_factory, classifier_onnx) -> Path:
    """tiny_onnx (no model_spec.json: found through the ensemble), tiny_preprocess, tiny."""
    path = tmp_path_factory.mktemp("model_repository")
    write_classifier(path, classifier_onnx)
    add_preprocess_and_ensemble(path, SPEC, CLASSIFIER, MAX_BATCH)
    return path


@pytest.fixture(scope="session")
def server(repo, tmp_path_factory):
    http, grpc, metrics = free_ports(3)
    work = tmp_path_factory.mktemp("serve")
    with TritonServer(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        admin_key=ADMIN_KEY,
        backend_dir=work / "backends",
        log_file=work / "server.log",
        ready_timeout=60,
    ) as s:
        yield s


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """imgs/ with 7 images in nested folders, plus a hidden folder that must be ignored."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for rel in ("b.png", "a.png", "sub/c.png", "sub/deeper/d.png", "sub/e.png", "z/f.png"):
        write_png(root / rel, random_image(rng))
    write_png(root / "sub" / "rgb.png", random_image(rng, rgb=True))
    write_png(root / ".hidden" / "x.png", random_image(rng))
    return root
