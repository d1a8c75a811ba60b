"""Triton Python-based backend `onnxruntime`: serves `<model>/<version>/model.onnx` on CPU.

Any model whose config says `backend: "onnxruntime"` runs on this file when Triton finds it
as `<backend-directory>/onnxruntime/model.py`. It reads the same config keys as NVIDIA's native
ONNX Runtime backend (thread counts in `parameters`, `optimization.graph.level`,
`default_model_filename`), so one repository serves here and in NVIDIA's container alike.

Hot path: the requests of a dynamic batch become one ORT run. Inputs are read zero-copy
(`as_numpy`), a lone request is run without concatenation, and nothing is logged per request.
Triton checks names, types and shapes before a request gets here; this backend refuses NaN and
Inf, which NVIDIA's native backend passes through (docs/serve.md). A refused request gets its
own error; its batch mates are still served.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    0: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}
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


def _param(config: dict, key: str, default: int) -> int:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return int(value) if value.strip() else default


def _session_options(config: dict) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # Default 1 thread, not NVIDIA's all-cores: on a shared CPU, scale with instance_group.
    opts.intra_op_num_threads = _param(config, "intra_op_thread_count", 1)
    opts.inter_op_num_threads = _param(config, "inter_op_thread_count", 1)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = config.get("optimization", {}).get("graph", {}).get("level", 0)
    opts.graph_optimization_level = _GRAPH_LEVELS.get(int(level), _GRAPH_LEVELS[0])
    return opts


def _mismatches(config: dict, session: ort.InferenceSession) -> list[str]:
    """Config inputs and outputs that the ONNX model lacks or types differently."""
    model = {a.name: a.type for a in [*session.get_inputs(), *session.get_outputs()]}
    problems = []
    for cfg in [*config["input"], *config["output"]]:
        name, data_type = cfg["name"], cfg["data_type"]
        if name not in model:
            problems.append(f"'{name}' is not in the model, which has {sorted(model)}")
            continue
        have = _ORT_TYPES.get(model[name])
        if have is not None and np.dtype(have) != pb_utils.triton_string_to_numpy(data_type):
            problems.append(f"'{name}' is {data_type} in the config, {model[name]} in the model")
    return problems


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        name = args["model_name"]
        filename = config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{name}: {path} not found")
        self.session = ort.InferenceSession(
            str(path), _session_options(config), providers=["CPUExecutionProvider"]
        )
        self.max_batch = int(config.get("max_batch_size", 0))
        self.input_names = [c["name"] for c in config["input"]]
        self.output_names = [c["name"] for c in config["output"]]
        problems = _mismatches(config, self.session)
        if problems:
            raise pb_utils.TritonModelException(
                f"{name}: {filename} vs config: {'; '.join(problems)}"
            )

    def _feed(self, request) -> dict[str, np.ndarray] | str:
        """The request's inputs by name, or a one-line reason why they are unusable.

        Triton's core has already refused missing or unknown inputs, other data types, shapes
        and batch sizes than the config's (tests/serve/test_serve_e2e.py sends each).
        """
        feed = {}
        for name in self.input_names:
            array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            # NaN/Inf would come back as NaN scores, or as confident answers after INT8.
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return f"input '{name}' holds NaN or Inf values"
            feed[name] = array
        return feed

    def _respond(self, outputs: list[np.ndarray]):
        tensors = [pb_utils.Tensor(n, o) for n, o in zip(self.output_names, outputs, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_one(self, feed: dict[str, np.ndarray]):
        try:
            return self._respond(self.session.run(self.output_names, feed))
        except Exception as e:  # ORT's errors per request, never a crash of the batch
            return _error(f"onnxruntime: {e}", internal=True)

    def _run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray] | None:
        """One ORT run over all feeds, or None if they cannot run as one batch."""
        try:
            batch = {n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]}
            return self.session.run(self.output_names, batch)
        except Exception:  # e.g. differing variable dims, or one request ORT rejects
            return None

    def execute(self, requests: list) -> list:
        feeds = [self._feed(r) for r in requests]
        good = [i for i, f in enumerate(feeds) if not isinstance(f, str)]
        responses = [_error(f) if isinstance(f, str) else None for f in feeds]
        batched = len(good) > 1 and self.max_batch
        outputs = self._run_batch([feeds[i] for i in good]) if batched else None
        if outputs is None:
            for i in good:
                responses[i] = self._run_one(feeds[i])
            return responses
        start = 0
        for i in good:
            size = len(next(iter(feeds[i].values())))
            responses[i] = self._respond([o[start : start + size] for o in outputs])
            start += size
        return responses


def _error(message: str, internal: bool = False):
    # pb_utils gets TritonError from the stub at run time, not at import: look it up here.
    error = pb_utils.TritonError
    return pb_utils.InferenceResponse(
        error=error(message, error.INTERNAL if internal else error.INVALID_ARG)
    )
