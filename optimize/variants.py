"""The deployable variants, the accuracy gate that decides which deploy, and their report rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contract import ModelSpec


@dataclass
class Variant:
    name: str  # fp32, pruned, int8, int8_trt, pruned_int8, pruned_int8_trt
    target: str  # cpu | tensorrt
    precision: str  # fp32 | int8
    pruned: bool
    path: Path  # its ONNX file


def int8_name(source: str, target: str) -> str:
    prefix = "pruned_" if source == "pruned" else ""
    return f"{prefix}int8" + ("_trt" if target == "tensorrt" else "")


def triton_name(v: Variant, spec: ModelSpec) -> str:
    return f"{spec.name}_trt" if v.target == "tensorrt" else f"{spec.name}_{v.name}"


def gate(variants: list[Variant], results: dict, max_drop: float, spec: ModelSpec) -> None:
    """Mark each variant deployed or not, with the reason.

    The drop is measured against the FP32 ONNX model on the test split. The repository holds
    one TensorRT model, so the pruned TensorRT graph is preferred when both pass.
    """
    reference = results["fp32"]["top1"]
    trt_chosen = False
    for v in sorted(variants, key=lambda v: not v.pruned):
        r = results[v.name]
        r["top1_drop"] = round(100 * (reference - r["top1"]), 3)
        r["deployed"], r["why"] = True, ""
        if r["top1_drop"] > max_drop:
            r["deployed"] = False
            r["why"] = f"top-1 drop {r['top1_drop']:.2f} points > {max_drop}"
        elif v.target == "tensorrt" and trt_chosen:
            r["deployed"] = False
            r["why"] = f"{spec.name}_trt holds the pruned TensorRT graph (one per repository)"
        elif v.target == "tensorrt":
            trt_chosen = True
        r["triton_model"] = triton_name(v, spec) if r["deployed"] else None


def rows(variants: list[Variant], results: dict, timings: dict, counts: dict) -> list[dict]:
    """One report row per variant; `counts` maps fp32/pruned to (MACs, params)."""
    fp32_throughput = timings["fp32"]["throughput_bs8"]
    out = []
    for v in variants:
        macs, params = counts["pruned" if v.pruned else "fp32"]
        r, t = results[v.name], timings[v.name]
        out.append(
            {
                "name": v.name,
                "target": v.target,
                "precision": v.precision,
                "pruned": v.pruned,
                "file": v.path.name,
                "size_bytes": v.path.stat().st_size,
                "params": params,
                "macs": macs,
                "mmacs": macs / 1e6,
                "top1": round(r["top1"], 4),
                "top5": round(r["top5"], 4),
                "macro_f1": round(r["macro_f1"], 4),
                "top1_drop": r["top1_drop"],
                "deployed": r["deployed"],
                "why": r["why"],
                "triton_model": r["triton_model"],
                "latency_ms_bs1": t["latency_ms_bs1"],
                "throughput_bs8": t["throughput_bs8"],
                "speedup_bs8": round(t["throughput_bs8"] / fp32_throughput, 3),
            }
        )
    return out


def best_cpu(report_rows: list[dict]) -> dict | None:
    """The deployed CPU variant with the highest batch-8 throughput (the ensemble's target)."""
    deployed = [r for r in report_rows if r["deployed"] and r["target"] == "cpu"]
    return max(deployed, key=lambda r: r["throughput_bs8"], default=None)
