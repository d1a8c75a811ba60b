"""The manifests' probe paths and autoscaler metrics against a real tritonserver, serving a
repository laid out as `make optimize` writes it, its ensemble named as the primary model."""

from __future__ import annotations

import dataclasses
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from deploy_helpers import SERVING, adapter_rule, find, primary_model
from serve_helpers import ADMIN_KEY, CLASSIFIER, MAX_BATCH, SPEC, png_bytes, write_classifier

from serve.repository import add_preprocess_and_ensemble
from serve.server import TritonServer, free_ports

SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


def start(repo: Path, logs: Path, **options) -> TritonServer:
    http, grpc, metrics = free_ports(3)
    return TritonServer(
        repo, http_port=http, grpc_port=grpc, metrics_port=metrics, admin_key=ADMIN_KEY,
        backend_dir=logs / "backends", log_file=logs / "server.log", ready_timeout=60,
        **options,
    ).start()  # fmt: skip


def repository(root: Path, primary: str, onnx: bytes) -> Path:
    repo = root / "model_repository"
    write_classifier(repo)
    (repo / CLASSIFIER / "1" / "model.onnx").write_bytes(onnx)
    spec = dataclasses.replace(SPEC, name=primary)
    add_preprocess_and_ensemble(repo, spec, CLASSIFIER, MAX_BATCH)
    return repo


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def primary(rendered) -> str:
    (name,) = {primary_model(rendered[n]) for n in (*SERVING, "kserve")}
    return name


@pytest.fixture(scope="module")
def served(primary, tiny_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("primary")
    server = start(repository(root, primary, tiny_onnx.read_bytes()), root)
    yield server
    server.stop()


def probe_paths(rendered) -> set[str]:
    paths = set()
    for name in SERVING:
        pod = find(rendered[name], "Deployment")["spec"]["template"]["spec"]
        paths |= {
            c[p]["httpGet"]["path"] for c in pod["containers"] for p in c if p.endswith("Probe")
        }
    model = find(rendered["kserve"], "InferenceService")["spec"]["predictor"]["model"]
    return paths | {model[p]["httpGet"]["path"] for p in model if p.endswith("Probe")}


def scrape(server: TritonServer) -> dict[tuple[str, str], float]:
    """{(metric, model): value} of Triton's per-model samples."""
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if "model" in labels and "reason" not in labels:
                samples[match[1], labels["model"]] = float(match[3])
    return samples


def test_every_probe_path_answers_200_on_triton(rendered, served, primary):
    paths = probe_paths(rendered)
    assert paths == {"/v2/health/live", f"/v2/models/{primary}/ready"}
    for path in paths:
        assert status(f"http://{served.http_url}{path}") == 200, path
    assert status(f"http://{served.http_url}/v2/models/not_{primary}/ready") != 200


def test_readiness_sees_a_failed_ensemble_the_server_endpoint_misses(primary, tmp_path):
    """Why readiness asks the primary ensemble: with its classifier broken, the server says
    ready while the ensemble is not (the pod then gets no traffic)."""
    # primary=[]: serve itself would refuse to report ready without the ensemble.
    server = start(repository(tmp_path, primary, b"not an onnx model"), tmp_path, primary=[])
    try:
        assert CLASSIFIER in server.unavailable and primary in server.unavailable
        assert status(f"http://{server.http_url}/v2/health/ready") == 200
        assert status(f"http://{server.http_url}/v2/models/{primary}/ready") != 200
    finally:
        server.stop()


def test_the_autoscaler_metric_comes_from_counters_triton_exports(served, primary):
    rule = adapter_rule()
    names = set(re.findall(r"\bnv_\w+", rule["seriesQuery"] + rule["metricsQuery"]))
    assert names == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert re.fullmatch(rule["name"]["matches"], re.match(r"\w+", rule["seriesQuery"])[0])
    before = scrape(served)
    client = triton_http.InferenceServerClient(served.http_url)
    image = triton_http.InferInput("image", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[png_bytes(np.zeros((28, 28), np.uint8))]], object))
    for _ in range(5):
        client.infer(primary, [image])
    after = scrape(served)
    for model in (primary, f"{primary}_preprocess", CLASSIFIER):  # every model of the pod
        assert {(n, model) for n in names} <= after.keys(), model
        served_requests = after["nv_inference_request_success", model]
        served_requests -= before["nv_inference_request_success", model]
        queued = after["nv_inference_queue_duration_us", model]
        queued -= before["nv_inference_queue_duration_us", model]
        assert served_requests == 5 and queued >= 0, model
    # The per-request queue time the rule computes is finite for the busiest model.
    assert 0 <= queued / served_requests < 10e6
