"""Triton Python-based backend `openvino`: serves an ONNX (or IR) model with OpenVINO on CPU.

Any model whose config says `backend: "openvino"` runs on this file when Triton finds it as
`<backend-directory>/openvino/model.py`; NVIDIA's images serve the same config with their
native C++ OpenVINO backend. It reads that backend's parameters (INFERENCE_NUM_THREADS,
NUM_STREAMS, PERFORMANCE_HINT, HINT_BF16, COMPILATION_NUM_THREADS, SKIP_OV_DYNAMIC_BATCHSIZE,
ENABLE_BATCH_PADDING, TARGET_DEVICE; backend_core.openvino_properties) and its default file
name (model.xml; optimize writes `default_model_filename: "model.onnx"`).

One difference, in speed only: the native backend compiles a static batch of max_batch_size
and, with ENABLE_BATCH_PADDING, pads every execution to it; this one runs the images it got,
on a copy of the model compiled for that batch size (backend_core.OpenVINOBatches). Without
ENABLE_BATCH_PADDING both refuse an execution whose batch is not max_batch_size, with the
native words (docs/serve.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

import openvino as ov
import triton_python_backend_utils as pb_utils
from backend_core import (
    STATIC_IMAGES,
    BatchingModel,
    OpenVINOBatches,
    Run,
    openvino_checks,
    openvino_properties,
    padding_error,
)


@functools.cache
def core() -> ov.Core:
    """One OpenVINO runtime per stub process (one process per model instance). The CPU plugin
    points the thread's alternate signal stack at a buffer of its own and restores it on
    teardown: with a Core per load, the stack ends up at freed memory and the next signal
    (Triton's unload, the watchdog) crashes the stub with SIGSEGV."""
    return ov.Core()


class TritonPythonModel(BatchingModel):
    engine = "openvino"
    default_filename = "model.xml"  # as NVIDIA's openvino_backend

    def load(self, path: Path, config: dict) -> tuple[Run, dict]:
        self.pads = openvino_checks(config)
        max_batch = int(config.get("max_batch_size", 0))
        self.batches = OpenVINOBatches(
            core(), core().read_model(str(path)), openvino_properties(config),
            budget=STATIC_IMAGES if max_batch else 0,  # no batch axis: nothing to compile for
        )  # fmt: skip
        self.batches.compile_upfront(max_batch)
        sizes = ", ".join(map(str, sorted(self.batches.static))) or "none"
        pb_utils.Logger.log_info(
            f"{config['name']}: openvino compiled for batch sizes {sizes} "
            f"(budget {self.batches.budget} images); other sizes run on the dynamic batch axis"
        )
        compiled = self.batches.dynamic
        # A config output the model lacks is reported by BatchingModel.initialize, not here.
        index = {name: i for i, port in enumerate(compiled.outputs) for name in port.get_names()}
        outputs = [index[c["name"]] for c in config["output"] if c["name"] in index]

        def run(feed):
            results = self.batches.infer(feed)
            return [results[i] for i in outputs]

        tensors = [*compiled.inputs, *compiled.outputs]
        types = {name: t.get_element_type().to_dtype() for t in tensors for name in t.get_names()}
        return run, types

    def batch_error(self, total: int) -> str | None:
        if self.pads or total == self.max_batch:
            return None
        return padding_error(self.max_batch, total)
