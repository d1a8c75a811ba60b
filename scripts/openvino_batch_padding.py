"""What NVIDIA's OpenVINO backend pays for a static batch, measured in process (docs/serve.md).

    python scripts/openvino_batch_padding.py model_repository/photo224_int8 [--seconds 1]

For a model folder of the repository (its config's parameters, its 1/<file>), one execution
of n images, n = 1, 2, 4, ... max_batch_size, two ways on OpenVINO:
  ours     the n images run on a copy compiled for batch n where the budget allows, else on
           the dynamic batch axis: serve's Python-based openvino backend (OpenVINOBatches);
  padded   the model compiled for max_batch_size (ov.set_batch), the n images padded with
           zeros to it: NVIDIA's backend with ENABLE_BATCH_PADDING=YES (src/openvino.cc).
Median ms per execution over --seconds each; images/s counts the n real images only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import openvino as ov
from google.protobuf import json_format

from optimize.evaluate import openvino_core
from serve.backends.backend_core import (
    STATIC_IMAGES,
    OpenVINOBatches,
    openvino_properties,
)
from serve.repository import read_config


def median_ms(request: ov.InferRequest, x: np.ndarray, seconds: float) -> float:
    for _ in range(3):  # warm-up: the first calls of a new shape compile kernels
        request.infer({0: x})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def native_static(model: ov.Model, max_batch: int) -> ov.Model:
    """As NVIDIA's backend prepares a batching model: input layout "N...", then a static batch."""
    ppp = ov.preprocess.PrePostProcessor(model)
    for port in model.inputs:
        ppp.input(port.get_any_name()).tensor().set_layout(ov.Layout("N..."))
    model = ppp.build()
    ov.set_batch(model, max_batch)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    proto = read_config(args.model_dir / "config.pbtxt")
    config = json_format.MessageToDict(proto, preserving_proto_field_name=True)
    props = openvino_properties(config)
    max_batch = proto.max_batch_size
    path = args.model_dir / "1" / (proto.default_model_filename or "model.xml")
    core = openvino_core()
    ours = OpenVINOBatches(core, core.read_model(str(path)), props, STATIC_IMAGES)
    ours.compile_upfront(max_batch)
    static_model = native_static(core.read_model(str(path)), max_batch)
    padded = core.compile_model(static_model, "CPU", props).create_infer_request()
    shape = [d.get_length() for d in static_model.input(0).get_partial_shape()]
    dtype = static_model.input(0).get_element_type().to_dtype()  # float32, or uint8 pixels
    full = (np.random.default_rng(0).standard_normal(shape) * 64 + 128).clip(0, 255).astype(dtype)
    precision = ours.dynamic.get_property("INFERENCE_PRECISION_HINT")
    print(f"{args.model_dir.name}: {props}, inference precision {precision}")
    native = median_ms(padded, full, args.seconds)  # the same work for any n
    print("| images | ours ms | ours img/s | ours compiled for | padded ms | padded img/s |")
    print("|---:|---:|---:|---|---:|---:|")
    sizes = sorted({*(2**i for i in range(max_batch.bit_length())), max_batch} - {0})
    for n in (n for n in sizes if n <= max_batch):
        compiled = ours.compiled_for(n)
        how = "a dynamic batch" if compiled is ours.dynamic else f"batch {n}"
        ms = median_ms(compiled.create_infer_request(), full[:n], args.seconds)
        print(
            f"| {n} | {ms:.2f} | {n / ms * 1e3:,.0f} | {how} | {native:.2f} "
            f"| {n / native * 1e3:,.0f} |"
        )


if __name__ == "__main__":
    main()
