"""client.connection.Triton over two real replicas: spread, a replica lost, a replica back."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from client_helpers import json_lines, run_infer
from serve_helpers import ADMIN_KEY, CLASSIFIER, SPEC, settled

from client.connection import PROBE_S, Policy, Triton
from serve.replicas import start_replicas

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(model_repo, backend_dir, tmp_path):
    group = start_replicas(
        model_repo, 2, log_dir=tmp_path, admin_key=ADMIN_KEY, backend_dir=backend_dir
    )
    yield group
    group.stop()


def served(url: str) -> int:
    """Images the classifier on one replica has answered so far."""
    client = httpclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(CLASSIFIER)["model_stats"]
        return sum(s["inference_count"] for s in stats)
    finally:
        client.close()


def classify(triton: Triton, n: int) -> None:
    x = np.zeros((1, 1, SPEC.height, SPEC.width), np.float32)
    for _ in range(n):
        result = triton.call("infer", CLASSIFIER, [triton.input("input", x, "FP32")])
        assert result.as_numpy("logits").shape == (1, len(SPEC.labels))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requests_are_spread_over_the_replicas(replicas, protocol):
    urls = replicas.http_urls if protocol == "http" else replicas.grpc_urls
    triton = Triton(",".join(urls), protocol)
    try:
        classify(triton, 10)
    finally:
        triton.close()
    counts = settled(lambda: [served(u) for u in replicas.http_urls], lambda c: sum(c) >= 10)
    assert counts == [5, 5]


def test_a_lost_replica_is_left_out_and_taken_back_once_ready(replicas):
    first, second = replicas.servers
    triton = Triton(replicas.http_url, "http", Policy(retries=1, backoff=0.1))
    try:
        classify(triton, 2)
        second.stop(1.0)
        classify(triton, 6)  # not one fails: the call that meets the dead replica moves on
        assert triton.in_service == [first.http_url]
        second.start()
        time.sleep(PROBE_S)
        classify(triton, 6)  # the first call after the pause asks it, finds it ready
        assert triton.in_service == replicas.http_urls
        assert served(second.http_url) >= 2  # a new process: it counts from 0
    finally:
        triton.close()


def test_infer_over_two_replicas_answers_as_over_one(replicas, images, capsys):
    common = [images, "--json", "--batch-size", "1", "--concurrency", "3"]
    code_one, one, _ = run_infer(capsys, *common, "--url", replicas.http_urls[0])
    code_two, two, err = run_infer(capsys, *common, "--url", replicas.http_url)
    assert code_one == code_two == 0 and err == ""
    assert json_lines(two) == json_lines(one) and len(json_lines(two)) == 7
    assert served(replicas.http_urls[1]) > 0  # the second replica took its share
