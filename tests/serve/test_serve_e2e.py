"""A real tritonserver on the tiny repository: answers must equal in-process ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_helpers import CLASSIFIER, SPEC, png_bytes, stats_after, triton_refuses
from tritonclient.utils import InferenceServerException

from contract import preprocess
from serve.install import MALLOC_ENV
from serve.procs import stubs
from serve.server import ADMIN_HEADER, GRPC_SHM_HEADER, SHM_HEADER, ServerError, TritonServer

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def http(server):
    client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def images(n: int) -> np.ndarray:
    return RNG.standard_normal((n, 1, 28, 28)).astype(np.float32)


def http_input(x: np.ndarray, name: str = "input", datatype: str = "FP32"):
    tensor = httpclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def image_input(encoded: list[bytes]):
    return http_input(np.array([[b] for b in encoded], dtype=np.object_), "image", "BYTES")


def reference(ort_session, x: np.ndarray) -> np.ndarray:
    return ort_session.run(["logits"], {"input": x})[0]


def test_server_and_models_ready(server, http, grpc):
    assert http.is_server_ready() and grpc.is_server_ready()
    for model in (CLASSIFIER, "tiny_preprocess", "tiny"):
        assert http.is_model_ready(model) and grpc.is_model_ready(model)


def test_every_stub_runs_with_the_allocator_settings(server):
    found = stubs(server.process.pid)
    assert {s.model for s in found} >= {CLASSIFIER, "tiny_preprocess"}
    for stub in found:
        environ = Path(f"/proc/{stub.pid}/environ").read_bytes().split(b"\0")
        assert all(f"{k}={v}".encode() in environ for k, v in MALLOC_ENV.items()), stub


def test_http_and_grpc_equal_onnxruntime(http, grpc, ort_session):
    x = images(3)
    via_http = http.infer(CLASSIFIER, [http_input(x)]).as_numpy("logits")
    g = grpcclient.InferInput("input", list(x.shape), "FP32")
    g.set_data_from_numpy(x)
    via_grpc = grpc.infer(CLASSIFIER, [g]).as_numpy("logits")
    np.testing.assert_allclose(via_http, reference(ort_session, x), atol=1e-5)
    np.testing.assert_allclose(via_grpc, reference(ort_session, x), atol=1e-5)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(http, ort_session):
    sizes = [1, 2, 1, 3, 1, 1, 2, 1]
    xs = [images(n) for n in sizes]
    before = http.get_inference_statistics(CLASSIFIER)["model_stats"][0]
    pending = [http.async_infer(CLASSIFIER, [http_input(x)]) for x in xs]
    results = [p.get_result().as_numpy("logits") for p in pending]
    after = stats_after(http, CLASSIFIER, before, sum(sizes))
    for x, got in zip(xs, results, strict=True):
        np.testing.assert_allclose(got, reference(ort_session, x), atol=1e-5)
    assert after["inference_count"] - before["inference_count"] == sum(sizes)
    assert after["execution_count"] - before["execution_count"] < len(sizes)  # batches formed


TRITON_REFUSES = triton_refuses(CLASSIFIER)


@pytest.mark.parametrize("case", TRITON_REFUSES)
def test_triton_refuses_what_the_config_rules_out_and_the_rest_of_the_batch_is_served(
    http, ort_session, case
):
    tensors, message = TRITON_REFUSES[case]
    x = images(1)
    bad_call = http.async_infer(CLASSIFIER, [http_input(a, n, t) for n, a, t in tensors])
    good_call = http.async_infer(CLASSIFIER, [http_input(x)])
    with pytest.raises(InferenceServerException) as refused:
        bad_call.get_result()
    assert refused.value.status() == "400" and message in refused.value.message()
    assert "onnxruntime" not in refused.value.message()  # not our backend's words
    np.testing.assert_allclose(
        good_call.get_result().as_numpy("logits"), reference(ort_session, x), atol=1e-5
    )


def test_nan_and_inf_inputs_are_refused_and_the_server_stays_healthy(http, ort_session):
    for bad in (np.nan, np.inf):
        x = images(2)
        x[1, 0, 5, 5] = bad
        with pytest.raises(InferenceServerException, match="NaN or Inf"):
            http.infer(CLASSIFIER, [http_input(x)])
    good = images(2)
    logits = http.infer(CLASSIFIER, [http_input(good)]).as_numpy("logits")
    np.testing.assert_allclose(logits, reference(ort_session, good), atol=1e-5)


def test_classification_extension_returns_labels(http, ort_session):
    x = images(2)
    top3 = http.infer(
        CLASSIFIER,
        [http_input(x)],
        outputs=[httpclient.InferRequestedOutput("logits", class_count=3)],
    ).as_numpy("logits")
    expected = np.argsort(-reference(ort_session, x), axis=1)[:, :3]
    for row, want in zip(top3, expected, strict=True):
        fields = [entry.decode().split(":") for entry in row]
        assert [int(f[1]) for f in fields] == list(want)
        assert [f[2] for f in fields] == [SPEC.labels[i] for i in want]


def test_ensemble_ranks_and_names_classes_by_probability(http, ort_session):
    """The ensemble passes both outputs on; class_count ranks the probabilities."""
    encoded = [png_bytes(RNG.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(3)]
    x = np.stack([preprocess(b, SPEC) for b in encoded])
    want = ort_session.run(["probabilities"], {"input": x})[0]
    result = http.infer("tiny", [image_input(encoded)], outputs=[
        httpclient.InferRequestedOutput("probabilities", class_count=4),
        httpclient.InferRequestedOutput("logits"),
    ])  # fmt: skip
    logits = result.as_numpy("logits")
    np.testing.assert_allclose(logits, reference(ort_session, x), atol=1e-5)
    for row, probs, raw in zip(result.as_numpy("probabilities"), want, logits, strict=True):
        fields = [entry.decode().split(":") for entry in row]
        assert [int(f[1]) for f in fields] == list(np.argsort(-raw)[:4])  # the logits' order
        assert [f[2] for f in fields] == [SPEC.labels[int(f[1])] for f in fields]
        np.testing.assert_allclose([float(f[0]) for f in fields], np.sort(probs)[::-1][:4],
                                   atol=1e-6)  # fmt: skip
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_ensemble_on_png_bytes_equals_local_preprocess_and_onnxruntime(http, grpc, ort_session):
    gray = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)  # converted to L and resized
    encoded = [png_bytes(gray), png_bytes(rgb)]
    want = reference(ort_session, np.stack([preprocess(b, SPEC) for b in encoded]))
    got = http.infer("tiny", [image_input(encoded)]).as_numpy("logits")
    np.testing.assert_allclose(got, want, atol=1e-5)

    g = grpcclient.InferInput("image", [1, 1], "BYTES")
    g.set_data_from_numpy(np.array([[encoded[0]]], dtype=np.object_))
    top = grpc.infer(
        "tiny", [g], outputs=[grpcclient.InferRequestedOutput("logits", class_count=1)]
    ).as_numpy("logits")
    assert top[0][0].decode().split(":")[2] == SPEC.labels[int(np.argmax(want[0]))]


def test_ensemble_bad_bytes_fail_alone_and_server_stays_ready(http, ort_session):
    good = png_bytes(RNG.integers(0, 256, (28, 28), dtype=np.uint8))
    bad_call = http.async_infer("tiny", [image_input([b"definitely not a PNG"])])
    good_call = http.async_infer("tiny", [image_input([good])])
    with pytest.raises(InferenceServerException, match="not a readable image"):
        bad_call.get_result()
    want = reference(ort_session, preprocess(good, SPEC)[None])
    np.testing.assert_allclose(good_call.get_result().as_numpy("logits"), want, atol=1e-5)
    assert http.is_server_ready() and http.is_model_ready("tiny")


def test_second_server_on_same_port_fails_fast(server, model_repo, tmp_path):
    second = TritonServer(
        model_repo,
        http_port=server.ports["http"],
        admin_key="another-key-123",
        log_file=tmp_path / "second.log",
    )
    with pytest.raises(ServerError) as e:
        second.start()
    assert f"port {server.ports['http']} (http) on 127.0.0.1 is taken" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "second.log").exists()


def test_admin_apis_refuse_without_the_key(server, http, grpc):
    for call in (http.get_model_repository_index, http.get_system_shared_memory_status):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    with pytest.raises(InferenceServerException, match="restricted"):
        http.unload_model(CLASSIFIER)
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.get_model_repository_index()
    assert http.is_model_ready(CLASSIFIER)

    index = http.get_model_repository_index(headers=server.admin_headers)
    assert {m["name"] for m in index} == {CLASSIFIER, "tiny_preprocess", "tiny"}
    grpc_index = grpc.get_model_repository_index(headers=server.grpc_admin_headers)
    assert {m.name for m in grpc_index.models} == {CLASSIFIER, "tiny_preprocess", "tiny"}


def test_shared_memory_and_model_control_each_open_with_their_own_key_only(server, http, grpc):
    grpc_shm = {GRPC_SHM_HEADER: server.shm_key}
    assert http.get_system_shared_memory_status(headers=server.shm_headers) == []
    assert grpc.get_system_shared_memory_status(headers=grpc_shm) is not None
    with pytest.raises(InferenceServerException, match="restricted"):
        http.get_system_shared_memory_status(headers={SHM_HEADER: server.admin_key})
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.get_system_shared_memory_status(headers={GRPC_SHM_HEADER: server.admin_key})
    with pytest.raises(InferenceServerException, match="restricted"):
        http.get_model_repository_index(headers={ADMIN_HEADER: server.shm_key})
