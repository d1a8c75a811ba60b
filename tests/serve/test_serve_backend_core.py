"""serve/backends/backend_core.py in process: NVIDIA's parameter names in, the engine settings
out; OpenVINO's static copy per batch size (the served answers are checked in
test_serve_openvino.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from serve_helpers import SPEC

from optimize.config import RepositoryConfig
from optimize.evaluate import openvino_compile_properties as measured_properties
from optimize.evaluate import openvino_core
from optimize.repository import RepoModel, model_config
from serve.backends.backend_core import (
    BackendConfigError,
    OpenVINOBatches,
    onnxruntime_settings,
    openvino_checks,
    openvino_properties,
)


def config(max_batch: int = 8, **params: str) -> dict:
    return {
        "max_batch_size": max_batch,
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


def written(engine: str, threads: int) -> dict:
    """The config optimize writes, as Triton hands it to a backend (JSON)."""
    model = RepoModel("m", Path("model.onnx"), engine=engine)
    proto = model_config(model, SPEC, RepositoryConfig(intra_op_threads=threads))
    return json_format.MessageToDict(proto, preserving_proto_field_name=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_server_compiles_openvino_as_optimize_measured_it(threads):
    served = openvino_properties(written("openvino", threads))
    assert served.pop("ALLOW_AUTO_BATCHING") == "YES"  # a no-op on CPU; the native backend sets it
    assert served == measured_properties(threads)
    assert openvino_checks(written("openvino", threads)) is True  # ENABLE_BATCH_PADDING


def test_openvino_values_are_read_as_the_native_backend_reads_them():
    props = openvino_properties(
        config(NUM_STREAMS="auto", PERFORMANCE_HINT="Throughput", HINT_BF16="yes",
               INFERENCE_NUM_THREADS="2", COMPILATION_NUM_THREADS="1")
    )  # fmt: skip
    assert props == {"NUM_STREAMS": "AUTO", "PERFORMANCE_HINT": "THROUGHPUT",
                     "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": "2",
                     "COMPILATION_NUM_THREADS": "1", "ALLOW_AUTO_BATCHING": "YES",
                     "ENABLE_CPU_PINNING": "NO"}  # fmt: skip
    # No precision unless asked: OpenVINO's own default applies, as natively.
    assert "INFERENCE_PRECISION_HINT" not in openvino_properties(config())
    assert openvino_properties(config())["INFERENCE_NUM_THREADS"] == "1"  # ours; native: all
    assert (
        openvino_properties(config(SKIP_OV_DYNAMIC_BATCHSIZE="YES"))["ALLOW_AUTO_BATCHING"] == "NO"
    )
    assert openvino_properties(config(max_batch=0))["ALLOW_AUTO_BATCHING"] == "NO"
    assert openvino_checks(config()) is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"TARGET_DEVICE": "GPU"}, "TARGET_DEVICE 'GPU': this backend runs on the CPU only"),
        ({"CPU_EXTENSION_PATH": "/x.so"}, "'CPU_EXTENSION_PATH' is not supported"),
    ],
)
def test_what_the_stand_in_does_not_do_is_refused(params, message):
    with pytest.raises(BackendConfigError, match=message):
        openvino_checks(config(**params))


def test_onnxruntime_settings_default_to_one_thread_and_every_optimisation():
    assert onnxruntime_settings(written("onnxruntime", 2)) == {
        "intra_op_threads": 2, "inter_op_threads": 1, "graph_level": "ORT_ENABLE_ALL"}  # fmt: skip
    basic = {**config(), "optimization": {"graph": {"level": -1}}}
    assert onnxruntime_settings(basic)["graph_level"] == "ORT_ENABLE_BASIC"
    with pytest.raises(BackendConfigError, match="'intra_op_thread_count' must be"):
        onnxruntime_settings(config(intra_op_thread_count="two"))


def ov_batches(tiny_onnx: Path, budget: int) -> OpenVINOBatches:
    core = openvino_core()
    return OpenVINOBatches(core, core.read_model(str(tiny_onnx)), measured_properties(1), budget)


def test_openvino_runs_each_batch_size_on_its_own_static_copy_with_the_same_answers(tiny_onnx):
    batches = ov_batches(tiny_onnx, budget=4)
    rng = np.random.default_rng(0)
    for n in (1, 3, 5, 3):
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        got = batches.infer({"input": x})[0]
        ran_on = batches.requests[batches.static.get(n, batches.dynamic)]  # whose outputs
        np.testing.assert_array_equal(ran_on.get_output_tensor(0).data, got)
        want = batches.dynamic.create_infer_request().infer({"input": x})[0]  # dynamic axis
        np.testing.assert_array_equal(got, want)
    # 1 and 3 fit the budget of 4 images; 5 does not and ran on the dynamic model.
    assert sorted(batches.static) == [1, 3]
    assert [p.get_partial_shape()[0].get_length() for p in batches.static[3].inputs] == [3]


def test_the_server_compiles_the_smallest_sizes_until_the_budget_runs_out(tiny_onnx):
    batches = ov_batches(tiny_onnx, budget=10)
    batches.compile_upfront(max_batch=8)
    assert sorted(batches.static) == [1, 2, 3, 4]  # 1 + 2 + 3 + 4 = 10; 5 does not fit
    batches = ov_batches(tiny_onnx, budget=64)
    batches.compile_upfront(max_batch=3)
    assert sorted(batches.static) == [1, 2, 3]  # never above max_batch_size
    nothing = ov_batches(tiny_onnx, budget=0)  # a model without a batch axis
    nothing.compile_upfront(max_batch=0)
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert nothing.infer({"input": x})[0].shape == (2, 10) and not nothing.static


def test_each_thread_runs_on_infer_requests_of_its_own(tiny_onnx):
    batches = ov_batches(tiny_onnx, budget=4)  # the FastAPI baseline calls from a threadpool
    x = np.zeros((3, 1, 28, 28), np.float32)
    want = batches.infer({"input": x})[0]
    theirs = {}

    def other_thread():
        np.testing.assert_array_equal(batches.infer({"input": x})[0], want)
        theirs.update(batches.requests)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    mine = batches.requests
    assert mine.keys() == theirs.keys() == {batches.static[3]}
    assert mine[batches.static[3]] is not theirs[batches.static[3]]
