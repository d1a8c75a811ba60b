"""serve's Python-based `openvino` backend on a real tritonserver: answers equal in-process
OpenVINO, bad input is answered as by the `onnxruntime` backend, NVIDIA's parameters and batch
rule hold, and unloading, reloading and the watchdog's kill/reload leave a healthy stub."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_helpers import OV, SPEC, STRICT, STRICT_BATCH, png_bytes, stats_after, triton_refuses
from tritonclient.utils import InferenceServerException

from contract import preprocess
from serve import procs
from serve.local import Local

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(1)


@pytest.fixture(scope="module")
def http(ov_server):
    client = httpclient.InferenceServerClient(ov_server.http_url, concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def local(ov_repo):
    """The same file and parameters on OpenVINO in this process."""
    run = Local(ov_repo / OV)
    return lambda x: run(x)["logits"]


def images(n: int) -> np.ndarray:
    return RNG.standard_normal((n, 1, 28, 28)).astype(np.float32)


def http_input(x: np.ndarray, name: str = "input", datatype: str = "FP32"):
    tensor = httpclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def logits(http, model: str, x: np.ndarray) -> np.ndarray:
    return http.infer(model, [http_input(x)]).as_numpy("logits")


def stub_pids(server, model: str) -> list[int]:
    return [s.pid for s in procs.stubs(server.process.pid) if s.model == model]


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_models_ready_on_the_openvino_backend(ov_server, http):
    assert http.is_server_ready()
    for model in (OV, STRICT, "tiny_preprocess", "tiny"):
        assert http.is_model_ready(model), model
    assert http.get_model_config(OV)["backend"] == "openvino"
    assert stub_pids(ov_server, OV)  # our stub serves it, not the onnxruntime one


def test_http_grpc_and_ensemble_equal_in_process_openvino(ov_server, http, local, ort_session):
    x = images(3)
    want = local(x)
    np.testing.assert_allclose(logits(http, OV, x), want, atol=1e-5)
    with contextlib.closing(grpcclient.InferenceServerClient(ov_server.grpc_url)) as grpc:
        g = grpcclient.InferInput("input", list(x.shape), "FP32")
        g.set_data_from_numpy(x)
        np.testing.assert_allclose(grpc.infer(OV, [g]).as_numpy("logits"), want, atol=1e-5)
    # The same model: ONNX Runtime's FP32 answers, within OpenVINO's default precision here.
    np.testing.assert_allclose(want, ort_session.run(["logits"], {"input": x})[0], atol=0.05)

    encoded = [png_bytes(RNG.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(2)]
    tensor = http_input(np.array([[b] for b in encoded], dtype=np.object_), "image", "BYTES")
    got = http.infer("tiny", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(
        got, local(np.stack([preprocess(b, SPEC) for b in encoded])), atol=1e-5
    )


def test_each_stub_compiles_the_smallest_batch_sizes_within_the_budget(ov_server):
    log = ov_server.log_file.read_text(errors="replace")
    # max_batch_size 32, 64 images: 1 + ... + 10 = 55, and 11 would not fit.
    assert f"{OV}: openvino compiled for batch sizes 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 " in log
    assert f"{STRICT}: openvino compiled for batch sizes 1, 2, 3, 4 " in log  # max batch 4


def test_concurrent_requests_run_as_one_dynamic_batch(http, local):
    sizes = [1, 2, 1, 3, 1, 1, 2, 1]
    xs = [images(n) for n in sizes]
    before = http.get_inference_statistics(OV)["model_stats"][0]
    pending = [http.async_infer(OV, [http_input(x)]) for x in xs]
    results = [p.get_result().as_numpy("logits") for p in pending]
    after = stats_after(http, OV, before, sum(sizes))
    for x, got in zip(xs, results, strict=True):
        np.testing.assert_allclose(got, local(x), atol=1e-5)
    assert after["inference_count"] - before["inference_count"] == sum(sizes)
    assert after["execution_count"] - before["execution_count"] < len(sizes)


@pytest.mark.parametrize("case", triton_refuses(OV))
def test_bad_input_is_refused_as_on_onnxruntime_and_batch_mates_are_served(http, local, case):
    tensors, message = triton_refuses(OV)[case]
    x = images(1)
    bad_call = http.async_infer(OV, [http_input(a, n, t) for n, a, t in tensors])
    good_call = http.async_infer(OV, [http_input(x)])
    with pytest.raises(InferenceServerException) as refused:
        bad_call.get_result()
    assert refused.value.status() == "400" and message in refused.value.message()
    np.testing.assert_allclose(good_call.get_result().as_numpy("logits"), local(x), atol=1e-5)


def test_nan_and_inf_are_refused_alone_with_the_onnxruntime_backends_words(http, local):
    good = images(2)
    for bad in (np.nan, np.inf):
        x = images(2)
        x[1, 0, 5, 5] = bad
        bad_call = http.async_infer(OV, [http_input(x)])
        good_call = http.async_infer(OV, [http_input(good)])
        with pytest.raises(InferenceServerException) as refused:
            bad_call.get_result()
        assert refused.value.status() == "400"
        assert "input 'input' holds NaN or Inf values" in refused.value.message()
        np.testing.assert_allclose(
            good_call.get_result().as_numpy("logits"), local(good), atol=1e-5
        )


def test_without_batch_padding_only_a_full_batch_runs_as_natively(http, local):
    with pytest.raises(InferenceServerException) as refused:
        logits(http, STRICT, images(2))
    assert f"expected requests with batch size '{STRICT_BATCH}', got '2'" in refused.value.message()
    assert "ENABLE_BATCH_PADDING" in refused.value.message()
    full = images(STRICT_BATCH)
    np.testing.assert_allclose(logits(http, STRICT, full), local(full), atol=1e-5)


# NVIDIA's backend's words (src/openvino.cc), and ours for what we do not support.
BAD_PARAMETERS = {
    "NUM_STREAMS": ("many", "'NUM_STREAMS' to be either AUTO/NUMA/<int_value>, got many"),
    "INFERENCE_NUM_THREADS": ("-1", "'INFERENCE_NUM_THREADS' to be a non-negative number, got -1"),
    "PERFORMANCE_HINT": ("fast", "LATENCY/THROUGHPUT/CUMULATIVE_THROUGHPUT, got fast"),
    "HINT_BF16": ("no", "expected the parameter 'HINT_BF16' to be YES, got no"),
    "RESHAPE_IO_LAYERS": ("YES", "'RESHAPE_IO_LAYERS' is not supported by serve's Python-based"),
}


@pytest.mark.parametrize("key", BAD_PARAMETERS)
def test_a_bad_parameter_fails_the_load_in_one_line_and_the_loaded_version_serves(
    ov_server, http, local, key
):
    value, message = BAD_PARAMETERS[key]
    config = http.get_model_config(STRICT)
    config["parameters"][key] = {"string_value": value}
    with pytest.raises(InferenceServerException) as failed:
        http.load_model(STRICT, headers=ov_server.admin_headers, config=json.dumps(config))
    assert message in failed.value.message()
    full = images(STRICT_BATCH)
    np.testing.assert_allclose(logits(http, STRICT, full), local(full), atol=1e-5)


def test_unload_and_reload_leave_the_server_and_a_new_stub_healthy(ov_server, http, local):
    admin, crashes = ov_server.admin_headers, len(ov_server.watchdog.events)
    for _ in range(3):
        old = stub_pids(ov_server, OV)
        http.unload_model(OV, headers=admin)
        assert wait_for(lambda: not stub_pids(ov_server, OV), 10)
        http.load_model(OV, headers=admin)
        assert http.is_model_ready(OV) and stub_pids(ov_server, OV) != old
        x = images(2)
        np.testing.assert_allclose(logits(http, OV, x), local(x), atol=1e-5)
    assert ov_server.process.poll() is None and len(ov_server.watchdog.events) == crashes
    log = ov_server.log_file.read_text(errors="replace")
    assert "Segmentation fault" not in log and "signal 11" not in log.lower()


def test_a_killed_openvino_stub_is_reloaded_by_the_watchdog(ov_server, http, local):
    (pid,) = stub_pids(ov_server, OV)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: ov_server.watchdog.events, 10)
    event = ov_server.watchdog.events[-1]
    assert event.model == OV and event.error is None
    assert wait_for(lambda: stub_pids(ov_server, OV), 10)
    x = images(3)
    np.testing.assert_allclose(logits(http, OV, x), local(x), atol=1e-5)
