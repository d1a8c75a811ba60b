"""Per-layer INT8 fallback: a quantized variant that misses the accuracy budget keeps its most
sensitive layer groups in FP32 until the budget holds.

A group is a block of the network (`_blocks.3`, `layer2.1`), or a layer of its own when it
sits at the top level (the stem, the head conv, the classifier), found from the module
paths the exporter writes into node names. A group's sensitivity is how far the answers move
when that group alone is quantized: the mean KL divergence of the softmax from FP32's on
validation images. Smooth where top-1 on a few hundred images moves in steps of a whole
image, and one ORT run per group, since the calibration ranges are computed once and reused
(`calibration_cache_path`).

Groups then go back to FP32 most sensitive first, re-measuring validation top-1 after each,
until the drop is within budget. Every step's model is kept for timing, so the report can
show what each fallback cost in speed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from optimize.data import Arrays
from optimize.evaluate import accuracy, predict, runner

QUANTIZABLE = ("Conv", "Gemm", "MatMul")

Quantizer = Callable[..., Path]  # (out, nodes_to_exclude=..., nodes_to_quantize=...) -> out


def group_of(node_name: str) -> str:
    """'/_blocks.3/_expand_conv/Conv' -> '_blocks.3'; '/layer2/layer2.1/conv1/Conv' ->
    'layer2/layer2.1'; '/_conv_stem/Conv' -> '_conv_stem'; '/0/Conv' -> '0'."""
    parts = node_name.strip("/").split("/")[:-1]  # module path without the op's name
    if len(parts) <= 1:
        return parts[0] if parts else node_name
    return "/".join(parts[:-1])


def layer_groups(model_path: Path) -> dict[str, list[str]]:
    """Group -> the names of all its nodes, in graph order, for groups with a weight layer."""
    nodes = onnx.load(str(model_path)).graph.node
    weighted = {group_of(n.name) for n in nodes if n.op_type in QUANTIZABLE}
    groups: dict[str, list[str]] = {}
    for n in nodes:
        group = group_of(n.name)
        if group in weighted:
            groups.setdefault(group, []).append(n.name)
    return groups


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def mean_kl(reference: np.ndarray, logits: np.ndarray) -> float:
    p, q = softmax(reference.astype(np.float64)), softmax(logits.astype(np.float64))
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


def sensitivities(
    fp32: Path,
    groups: dict[str, list[str]],
    quantize: Quantizer,
    x: np.ndarray,
    work: Path,
    threads: int,
) -> dict[str, float]:
    """Mean KL from FP32 when only each group is quantized, on the images `x`."""
    reference = predict(runner(fp32, threads), x)
    scores = {}
    for group, nodes in groups.items():
        path = quantize(work / "sensitivity.onnx", nodes_to_quantize=nodes)
        scores[group] = mean_kl(reference, predict(runner(path, threads), x))
        path.unlink()
    return scores


def fall_back(
    fp32: Path,
    quantized_top1: float,
    fp32_top1: float,
    budget: float,
    quantize: Quantizer,
    selection: Arrays,
    sensitivity_images: int,
    work: Path,
    threads: int,
    always_excluded: list[str],
) -> dict:
    """FP32 groups, most sensitive first, until the validation drop is <= budget points.

    Returns the record (sensitivities, steps) and, under "path", the last step's model;
    every step's model stays in `work` as `<stem>.fallback<k>.onnx` for timing.
    """
    groups = layer_groups(fp32)
    scores = sensitivities(fp32, groups, quantize, selection.x[:sensitivity_images], work,
                           threads)  # fmt: skip
    order = sorted(groups, key=lambda g: scores[g], reverse=True)
    steps = [{"fp32_groups": [], "val_top1": quantized_top1,
              "drop": round(100 * (fp32_top1 - quantized_top1), 3)}]  # fmt: skip
    path = None
    for k, group in enumerate(order, start=1):
        if steps[-1]["drop"] <= budget:
            break
        kept = order[:k]
        excluded = always_excluded + [n for g in kept for n in groups[g]]
        path = quantize(work / f"fallback{k}.onnx", nodes_to_exclude=excluded)
        top1 = accuracy(runner(path, threads), selection.x, selection.y)["top1"]
        steps.append({"fp32_groups": kept, "val_top1": round(top1, 4),
                      "drop": round(100 * (fp32_top1 - top1), 3), "file": path.name})  # fmt: skip
        print(f"    fallback {k}: {group} to FP32, val top-1 {top1:.4f} "
              f"(drop {steps[-1]['drop']:.2f} points)")  # fmt: skip
    return {
        "budget_points": budget,
        "sensitivity_images": min(sensitivity_images, len(selection.y)),
        "sensitivity": {g: round(scores[g], 6) for g in order},
        "steps": steps,
        "kept_fp32": steps[-1]["fp32_groups"],
        "met": steps[-1]["drop"] <= budget,
        "path": path,
    }


def layer_precisions(model_path: Path) -> list[dict]:
    """Every weight layer of a QDQ model and whether it runs in INT8 (weights dequantized)."""
    graph = onnx.load(str(model_path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [
        {
            "layer": n.name,
            "op": n.op_type,
            "group": group_of(n.name),
            "precision": "int8" if len(n.input) > 1 and n.input[1] in dequantized else "fp32",
        }
        for n in graph.node
        if n.op_type in QUANTIZABLE
    ]
