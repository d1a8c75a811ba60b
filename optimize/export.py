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
