"""PyTorch -> ONNX with a dynamic batch axis, verified by the checker and against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from contract import ModelSpec
from contract.atomic import staged_file
from contract.preprocess import normalize, scale_shift
from optimize.config import OptimizeError
from optimize.evaluate import session


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, opset: int) -> Path:
    """Write `path` (batch axis named "batch") and run the full ONNX checker on it."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, spec.channels, spec.height, spec.width)
    with staged_file(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo=True, which needs
        # onnxscript (not installed); its output for plain CNNs is the same standard ONNX.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # Python ints taken from traced shapes (e.g. "SAME" padding) are meant as constants.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return path


def add_probabilities(path: Path, spec: ModelSpec) -> Path:
    """Append Softmax(logits) as a second output, computed in the same run as the logits.

    Served scores are then probabilities a reader can weigh, and Triton's classification
    extension ranks them as it ranks logits (softmax keeps the order). Added after
    quantization, so the probabilities stay float whatever precision the layers run in.
    """
    model = onnx.load(str(path))
    graph = model.graph
    logits = next(o for o in graph.output if o.name == spec.output_name)
    graph.node.append(onnx.helper.make_node("Softmax", [logits.name], [spec.probabilities_name],
                                            axis=1, name="probabilities/Softmax"))  # fmt: skip
    probs = graph.output.add()
    probs.CopyFrom(logits)
    probs.name = spec.probabilities_name
    onnx.checker.check_model(model)
    with staged_file(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def take_pixels(path: Path, spec: ModelSpec) -> Path:
    """Make the model take uint8 pixels: Cast, Mul, Sub in front of it, contract.normalize's
    float32 arithmetic with its constants, so that a client or the server's preprocess model
    sends a quarter of the bytes and the engine normalises (the same result, bit for bit, on
    ONNX Runtime and OpenVINO: tests/optimize/test_optimize_export.py). Added after
    quantization, like the probabilities: the normalisation stays float."""
    model = onnx.load(str(path))
    graph = model.graph
    name = spec.input_name
    (feed,) = [i for i in graph.input if i.name == name]
    if feed.type.tensor_type.elem_type == onnx.TensorProto.UINT8:
        return path  # already takes pixels
    inner = f"{name}/normalized"
    for node in graph.node:
        node.input[:] = [inner if x == name else x for x in node.input]
    scale, shift = scale_shift(spec)
    graph.initializer.extend([
        onnx.numpy_helper.from_array(scale[None], f"{name}/scale"),
        onnx.numpy_helper.from_array(shift[None], f"{name}/shift"),
    ])  # fmt: skip
    make = onnx.helper.make_node
    nodes = [
        make("Cast", [name], [f"{name}/float"], to=onnx.TensorProto.FLOAT, name="pixels/Cast"),
        make("Mul", [f"{name}/float", f"{name}/scale"], [f"{name}/scaled"], name="pixels/Mul"),
        make("Sub", [f"{name}/scaled", f"{name}/shift"], [inner], name="pixels/Sub"),
        *graph.node,
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    feed.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    onnx.checker.check_model(model)
    with staged_file(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def pixels_parity(float_path: Path, pixels_path: Path, spec: ModelSpec, count: int = 8) -> float:
    """Max |difference| of every output between the float model on normalize(pixels) and
    its pixels-taking copy on the pixels (random ones: this checks arithmetic, not accuracy)."""
    shape = (count, spec.channels, spec.height, spec.width)
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    want = session(float_path, threads=1).run(None, {spec.input_name: normalize(pixels, spec)})
    got = session(pixels_path, threads=1).run(None, {spec.input_name: pixels})
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))


def parity(
    model: nn.Module, onnx_path: Path, spec: ModelSpec, batch: np.ndarray, tolerance: float
) -> float:
    """Max |ORT - PyTorch| over the batch's logits; raises above `tolerance`."""
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    got = session(onnx_path, threads=1).run(None, {spec.input_name: batch})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:  # also catches NaN
        raise OptimizeError(
            f"{onnx_path.name}: ONNX vs PyTorch max abs diff {diff:.2e} > {tolerance}"
        )
    return diff
