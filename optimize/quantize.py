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

import shutil
import time
from dataclasses import dataclass
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

from optimize import fallback
from optimize.config import BenchConfig, QuantizeConfig
from optimize.data import Arrays
from optimize.evaluate import accuracy, benchmark, runner

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

    Equal, because ORT's histogram calibrators stack the batches of each tensor. Ranges
    (`set_range`) let the calibrator take one batch at a time: it keeps every activation of
    what it is given, which for 512 images of a 224 px CNN would be over 10 GB.
    """

    def __init__(self, x: np.ndarray, input_name: str):
        self.x, self.input_name, self.pos, self.end = x, input_name, 0, len(x)
        self.batch_size = max(b for b in range(1, min(32, len(x)) + 1) if len(x) % b == 0)

    def __len__(self) -> int:
        return len(self.x)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.pos, self.end = start_index, end_index

    def get_next(self) -> dict | None:
        if self.pos >= self.end:
            return None
        batch = self.x[self.pos : min(self.pos + self.batch_size, self.end)]
        self.pos += self.batch_size
        return {self.input_name: np.ascontiguousarray(batch)}

    def rewind(self) -> None:
        self.pos, self.end = 0, len(self.x)


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-pass: shape inference plus BN folding and constant folding."""
    quant_pre_process(str(fp32), str(out))
    return out


def stem_nodes(model_path: Path) -> list[str]:
    """The conv fed by the model input (1-3 channels; ORT's int8 kernel is slow there), and
    the Pad in front of it where the model pads like TensorFlow ("SAME")."""
    graph = onnx.load(str(model_path)).graph
    fed = {i.name for i in graph.input}
    pads = [n for n in graph.node if n.op_type == "Pad" and n.input[0] in fed]
    fed |= {n.output[0] for n in pads}
    return [n.name for n in pads] + [
        n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in fed
    ]


@dataclass
class Calibration:
    """What every quantization of one FP32 model shares: its data and cached ranges."""

    pre: Path  # the pre-processed FP32 model
    images: np.ndarray
    input_name: str
    work: Path  # where the range caches (one per method) live

    def cache(self, method: str) -> Path:
        # Ranges are raw min/max or histograms: both targets reuse them.
        return self.work / f"{self.pre.stem}.{method}.calibration.json"


def quantize(
    cal: Calibration,
    out: Path,
    target: str,
    method: str,
    cfg: QuantizeConfig,
    nodes_to_exclude: list[str] | None = None,
    nodes_to_quantize: list[str] | None = None,
) -> Path:
    settings = TARGET_SETTINGS[target]
    reader = ArrayReader(cal.images, cal.input_name)
    # One batch per collection pass (ORT's name says MinMax; every calibrator honours it).
    extra = {**settings["extra_options"], "CalibStridedMinMax": reader.batch_size}
    if method == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    if nodes_to_exclude is None and cfg.float_stem and target == "cpu":
        nodes_to_exclude = stem_nodes(cal.pre)
    quantize_static(
        str(cal.pre),
        str(out),
        reader,
        nodes_to_exclude=nodes_to_exclude,
        nodes_to_quantize=nodes_to_quantize,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=cfg.reduce_range and target == "cpu",
        activation_type=settings["activation_type"],
        weight_type=QuantType.QInt8,
        calibrate_method=METHODS[method],
        extra_options=extra,
        calibration_cache_path=cal.cache(method),
    )
    return out


def quantize_best(
    cal: Calibration,
    out: Path,
    target: str,
    selection: Arrays,
    fp32_val_top1: float,
    max_drop: float,
    cfg: QuantizeConfig,
    threads: int,
    bench_threads: int = 1,
) -> dict:
    """Quantize with every calibration method and keep the best on validation; when that
    misses the budget (max_drop - fallback_margin points), fall back per layer group.
    `threads` run the accuracy checks, `bench_threads` time the fallback's steps."""
    tried = {}
    for method in cfg.methods:
        candidate = out.with_name(f"{out.stem}.{method}{out.suffix}")
        start = time.perf_counter()
        quantize(cal, candidate, target, method, cfg)
        top1 = accuracy(runner(candidate, threads), selection.x, selection.y)["top1"]
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
    record = {"method": best, "methods": tried, "val_images": len(selection.y),
              "fp32_val_top1": round(fp32_val_top1, 4)}  # fmt: skip
    budget = max_drop - cfg.fallback_margin
    if cfg.fallback and 100 * (fp32_val_top1 - tried[best]["val_top1"]) > budget:
        print(f"  {out.stem} [{target}]: val drop > {budget:.2f} points, per-layer fallback")
        record["fallback"] = layer_fallback(
            cal, out, target, best, selection, (tried[best]["val_top1"], fp32_val_top1), budget,
            cfg, (threads, bench_threads),
        )  # fmt: skip
    return record


def layer_fallback(
    cal: Calibration,
    out: Path,
    target: str,
    method: str,
    selection: Arrays,
    top1s: tuple[float, float],
    budget: float,
    cfg: QuantizeConfig,
    threads: tuple[int, int],
) -> dict:
    """fallback.fall_back with this target's quantizer; times every step, keeps the last.

    top1s: validation top-1 of the all-INT8 model and of FP32; threads: (accuracy, timing)."""
    stem = stem_nodes(cal.pre) if cfg.float_stem and target == "cpu" else []
    work = out.parent / f"{out.stem}.fallback"
    work.mkdir()

    def quantizer(path: Path, nodes_to_exclude=None, nodes_to_quantize=None) -> Path:
        return quantize(cal, path, target, method, cfg, nodes_to_exclude, nodes_to_quantize)

    record = fallback.fall_back(
        cal.pre, *top1s, budget, quantizer, selection, cfg.sensitivity_images, work, threads[0],
        stem,
    )  # fmt: skip
    paths = {"0": out, **{str(k): work / s["file"] for k, s in enumerate(record["steps"]) if k}}
    runners = {k: runner(p, threads[1]) for k, p in paths.items()}
    timing = benchmark(runners, selection.x, BenchConfig(rounds=2, seconds=0.2, warmup=3))
    for k, step in enumerate(record["steps"]):
        step["throughput_bs8"] = timing[str(k)]["throughput_bs8"]
    if record.pop("path") is not None:
        paths[str(len(record["steps"]) - 1)].replace(out)
    shutil.rmtree(work)
    return record
