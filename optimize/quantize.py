"""INT8 post-training quantization with ONNX Runtime, one QDQ graph per deployment target.

`cpu`: uint8 asymmetric activations + int8 per-channel weights. On x86 ORT runs these as
QLinearConv / QLinearAdd: about 2x faster than FP32 (measured, see the CPU baselines). The
stem convolution, which reads the 1-3 channel image, stays in float by default: measured on
the 28x28 Fashion-MNIST model, its QLinearConv took 135 us per batch of 8 against 20-40 us
in FP32, and keeping it float made the pruned INT8 model about 15% faster.
`tensorrt`: int8 symmetric activations and per-channel weights (zero points 0) with float
biases: the explicit-quantization form TensorRT builds INT8 engines from. ORT on x86 keeps
much of that graph in float around the Q/DQ pairs, so it is slower there than FP32; its CPU
run only serves as the proxy for its INT8 accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from optimize.config import QuantizeConfig
from optimize.data import Arrays
from optimize.evaluate import accuracy, session

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
TARGET_SETTINGS = {
    "cpu": {
        "activation_type": QuantType.QUInt8,
        "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True},
    },
    "tensorrt": {
        "activation_type": QuantType.QInt8,
        # TensorRT quantizes biases itself and its parser takes only int8 Q/DQ.
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
        },
    },
}


class ArrayReader(CalibrationDataReader):
    """Feeds preprocessed images to the calibrator in equal batches of at most 32.

    Equal, because ORT's histogram calibrators stack the batches of each tensor.
    """

    def __init__(self, x: np.ndarray, input_name: str):
        self.x, self.input_name, self.pos = x, input_name, 0
        self.batch_size = max(b for b in range(1, min(32, len(x)) + 1) if len(x) % b == 0)

    def get_next(self) -> dict | None:
        if self.pos >= len(self.x):
            return None
        batch = self.x[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return {self.input_name: np.ascontiguousarray(batch)}

    def rewind(self) -> None:
        self.pos = 0


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-pass: shape inference plus BN folding and constant folding."""
    quant_pre_process(str(fp32), str(out))
    return out


def stem_convs(model_path: Path) -> list[str]:
    """Convolutions fed by the model input (1-3 channels): ORT's int8 kernel is slow there."""
    graph = onnx.load(str(model_path)).graph
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def quantize(
    pre: Path,
    out: Path,
    target: str,
    method: str,
    calibration: np.ndarray,
    input_name: str,
    cfg: QuantizeConfig,
) -> Path:
    settings = TARGET_SETTINGS[target]
    extra = dict(settings["extra_options"])
    if method == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    float_stem = cfg.float_stem and target == "cpu"
    quantize_static(
        str(pre),
        str(out),
        ArrayReader(calibration, input_name),
        nodes_to_exclude=stem_convs(pre) if float_stem else None,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=cfg.reduce_range and target == "cpu",
        activation_type=settings["activation_type"],
        weight_type=QuantType.QInt8,
        calibrate_method=METHODS[method],
        extra_options=extra,
    )
    return out


def quantize_best(
    pre: Path,
    out: Path,
    target: str,
    calibration: np.ndarray,
    selection: Arrays,
    input_name: str,
    cfg: QuantizeConfig,
    threads: int,
) -> dict:
    """Quantize with every calibration method; keep the one with the best validation top-1."""
    tried = {}
    for method in cfg.methods:
        candidate = out.with_name(f"{out.stem}.{method}{out.suffix}")
        start = time.perf_counter()
        quantize(pre, candidate, target, method, calibration, input_name, cfg)
        top1 = accuracy(session(candidate, threads), selection.x, selection.y)["top1"]
        tried[method] = {
            "val_top1": round(top1, 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"  {out.stem} [{target}] {method:<10} val top-1 {top1:.4f}")
    best = max(cfg.methods, key=lambda m: tried[m]["val_top1"])  # ties: the earlier method
    for method in cfg.methods:
        candidate = out.with_name(f"{out.stem}.{method}{out.suffix}")
        if method == best:
            candidate.replace(out)
        else:
            candidate.unlink()
    return {"method": best, "methods": tried, "val_images": len(selection.y)}
