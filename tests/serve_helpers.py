"""Constants and helpers shared by the serve tests (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np

from contract import ModelSpec
from serve.server import TritonServer, free_ports

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = "tiny_onnx"
ADMIN_KEY = "test-admin-key-0123"
SHM_KEY = "test-shm-key-4567"
MAX_BATCH = 8
SPEC = ModelSpec(
    name="tiny",
    arch="tinycnn",
    labels=tuple(f"class{i}" for i in range(10)),
    height=28,
    width=28,
    color_mode="L",
    mean=(0.5,),
    std=(0.5,),
)
OV = "tiny_openvino"  # an OpenVINO classifier as optimize writes one, with a batching window
STRICT = "tiny_openvino_strict"  # no ENABLE_BATCH_PADDING: NVIDIA's static-batch rule applies
STRICT_BATCH = 4
# Hand-written as an operator would; the 20 ms batching window lets concurrent test requests
# reliably meet in one batch.
CLASSIFIER_CONFIG = """\
name: "tiny_onnx"
backend: "onnxruntime"
max_batch_size: 32
input [{ name: "input" data_type: TYPE_FP32 dims: [1, 28, 28] }]
output [
  { name: "logits" data_type: TYPE_FP32 dims: [10] label_filename: "labels.txt" },
  { name: "probabilities" data_type: TYPE_FP32 dims: [10] label_filename: "labels.txt" }
]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [{ kind: KIND_CPU count: 1 }]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def local_server(repo: Path, backend_dir: Path, log_dir: Path, **options) -> TritonServer:
    """A TritonServer as the tests run one: free loopback ports, the admin key, its log in
    `log_dir`; `options` go to TritonServer (shm_key, restarts, ...)."""
    http, grpc, metrics = free_ports(3)
    return TritonServer(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        admin_key=ADMIN_KEY,
        backend_dir=backend_dir,
        log_file=log_dir / "server.log",
        ready_timeout=60,
        **options,
    )


def openvino_config(name: str, max_batch: int, padding: bool) -> str:
    """A config for NVIDIA's OpenVINO backend (and ours), in its parameter names."""
    params = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    if padding:
        params["ENABLE_BATCH_PADDING"] = "YES"
    lines = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items()
    )
    return f"""\
name: "{name}"
backend: "openvino"
default_model_filename: "model.onnx"
max_batch_size: {max_batch}
input [{{ name: "input" data_type: TYPE_FP32 dims: [1, 28, 28] }}]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [10] label_filename: "labels.txt" }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [10] label_filename: "labels.txt" }}
]
dynamic_batching {{ max_queue_delay_microseconds: 20000 }}
instance_group [{{ kind: KIND_CPU count: 1 }}]
{lines}"""


def triton_refuses(model: str) -> dict[str, tuple[list, str]]:
    """What a classifier's backend never sees: Triton's core refuses each request against the
    config (dims [1, 28, 28], max_batch_size 32) with its own words, before the backend runs."""
    return {
        "missing input": ([], "missing required input(s) ['input']"),
        "unknown input": ([("other", np.zeros((1, 1, 28, 28), np.float32), "FP32")],
                          "unexpected inference input 'other'"),
        "data type": ([("input", np.zeros((1, 1, 28, 28), np.float64), "FP64")],
                      f"data-type is 'FP64', but model '{model}' expects 'FP32'"),
        "rank": ([("input", np.zeros((1, 28, 28), np.float32), "FP32")],
                 "Expected [-1,1,28,28], got [1,28,28]"),
        "shape": ([("input", np.zeros((1, 1, 27, 28), np.float32), "FP32")],
                  "Expected [-1,1,28,28], got [1,1,27,28]"),
        "batch size": ([("input", np.zeros((33, 1, 28, 28), np.float32), "FP32")],
                       "batch-size must be <= 32"),
    }  # fmt: skip


def export_onnx(net, path: Path, chw: tuple[int, int, int] = (1, 28, 28)) -> Path:
    """`net` ([N,*chw] -> [N,10]) as ONNX with "input" -> "logits" and "probabilities"
    (their softmax, as optimize writes every classifier) and a dynamic batch."""
    import torch

    from optimize.export import add_probabilities

    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, *chw),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return add_probabilities(path, SPEC)


def settled(read, done, seconds: float = 10.0):
    """`read()` once `done(value)` holds, or its last value when the deadline passes.

    Triton counts an execution when the backend reports it, which can be just after the
    last response reached the client; on busy cores a count read right then misses it.
    """
    deadline = time.monotonic() + seconds
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def stats_after(http, model: str, before: dict, inferences: int) -> dict:
    """The model's statistics once `inferences` more have been counted."""
    return settled(
        lambda: http.get_inference_statistics(model)["model_stats"][0],
        lambda after: after["inference_count"] - before["inference_count"] >= inferences,
    )


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_classifier(repo: Path, onnx: Path | None = None) -> Path:
    model_dir = repo / CLASSIFIER
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CLASSIFIER_CONFIG)
    (model_dir / "labels.txt").write_text("".join(f"{label}\n" for label in SPEC.labels))
    if onnx is not None:
        (model_dir / "1" / "model.onnx").write_bytes(onnx.read_bytes())
    return model_dir
