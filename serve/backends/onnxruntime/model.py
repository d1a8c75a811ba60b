"""Triton Python-based backend `onnxruntime`: serves `<model>/<version>/model.onnx` on CPU.

Any model whose config says `backend: "onnxruntime"` runs on this file when Triton finds it
as `<backend-directory>/onnxruntime/model.py`. It reads the same config keys as NVIDIA's native
ONNX Runtime backend (thread counts in `parameters`, `optimization.graph.level`,
`default_model_filename`), so one repository serves here and in NVIDIA's container alike.
Batching, errors and the NaN/Inf refusal are backend_core's, shared with `openvino/model.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from backend_core import BatchingModel, Run, onnxruntime_settings

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def session_options(config: dict) -> ort.SessionOptions:
    settings = onnxruntime_settings(config)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings["intra_op_threads"]
    opts.inter_op_num_threads = settings["inter_op_threads"]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_level"])
    return opts


class TritonPythonModel(BatchingModel):
    engine = "onnxruntime"
    default_filename = "model.onnx"  # as NVIDIA's onnxruntime_backend

    def load(self, path: Path, config: dict) -> tuple[Run, dict]:
        session = ort.InferenceSession(
            str(path), session_options(config), providers=["CPUExecutionProvider"]
        )
        outputs = [c["name"] for c in config["output"]]
        tensors = [*session.get_inputs(), *session.get_outputs()]
        return (
            lambda feed: session.run(outputs, feed),
            {t.name: _ORT_TYPES.get(t.type) for t in tensors},
        )
