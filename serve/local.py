"""A served classifier run in this process, set up as its config.pbtxt sets up the backend that
serves it (ONNX Runtime or OpenVINO, the same parameters through backend_core's parsers): the
known answer that client/verify.py and reliability compare the server with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf import json_format

from optimize.config import ENGINES
from serve.backends.backend_core import (
    STATIC_IMAGES,
    BackendConfigError,
    OpenVINOBatches,
    onnxruntime_settings,
    openvino_properties,
)
from serve.repository import RepositoryError, read_config


class Local:
    """`<model_dir>/1/<file>` on the engine its config names; call it with a batch of the
    (single) input, get every output by name."""

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        proto = read_config(model_dir / "config.pbtxt")
        config = json_format.MessageToDict(proto, preserving_proto_field_name=True)
        self.engine = "onnxruntime" if proto.platform == "onnxruntime_onnx" else proto.backend
        if self.engine not in ENGINES:
            raise RepositoryError(f"{model_dir.name}: backend '{self.engine}' is not a CPU engine")
        default = "model.xml" if self.engine == "openvino" else "model.onnx"
        self.path = model_dir / "1" / (proto.default_model_filename or default)
        if not self.path.is_file():
            raise RepositoryError(f"{self.path} not found")
        self.input = proto.input[0].name
        self.outputs = [o.name for o in proto.output]
        try:
            self._run = self._openvino(config) if self.engine == "openvino" else self._ort(config)
        except BackendConfigError as e:
            raise RepositoryError(f"{model_dir.name}: {e}") from None

    def _ort(self, config: dict):
        import onnxruntime as ort

        settings = onnxruntime_settings(config)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = settings["intra_op_threads"]  # same kernels, same sums
        opts.inter_op_num_threads = settings["inter_op_threads"]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_level"])
        session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        return lambda x: session.run(self.outputs, {self.input: x})

    def _openvino(self, config: dict):
        # The process's one Core (optimize.evaluate.openvino_core says why there is one); the
        # model run as the backend runs it, a copy compiled per batch size within the budget.
        from optimize.evaluate import openvino_core

        core = openvino_core()
        batches = OpenVINOBatches(
            core, core.read_model(str(self.path)), openvino_properties(config), STATIC_IMAGES
        )

        def run(x: np.ndarray) -> list[np.ndarray]:
            results = batches.infer({self.input: x})
            return [results[name] for name in self.outputs]

        return run

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self._run(np.ascontiguousarray(x)), strict=True))
