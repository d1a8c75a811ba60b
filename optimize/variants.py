"""The deployable variants, the accuracy gate that decides which deploy and on which engine,
and their report rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from contract import ModelSpec
from optimize.config import ENGINES

REFERENCE = ("fp32", "onnxruntime")  # every drop is measured against FP32 on ONNX Runtime


@dataclass
class Variant:
    name: str  # fp32, pruned, int8, int8_trt, pruned_int8, pruned_int8_trt
    target: str  # cpu | tensorrt
    precision: str  # fp32 | int8
    pruned: bool
    path: Path  # its ONNX file

    @property
    def engines(self) -> tuple[str, ...]:
        """Where it can serve: a CPU variant on either engine; the TensorRT graph serves on
        GPUs, and its run on ONNX Runtime here is only the proxy for its INT8 accuracy."""
        return ENGINES if self.target == "cpu" else ("onnxruntime",)


def int8_name(source: str, target: str) -> str:
    prefix = "pruned_" if source == "pruned" else ""
    return f"{prefix}int8" + ("_trt" if target == "tensorrt" else "")


def triton_name(v: Variant, spec: ModelSpec) -> str:
    return f"{spec.name}_trt" if v.target == "tensorrt" else f"{spec.name}_{v.name}"


def timing_key(name: str, engine: str) -> str:
    return f"{name}@{engine}"


def gate(
    variants: list[Variant],
    results: dict,
    max_drop: float,
    spec: ModelSpec,
    allowed: tuple[str, ...] = ENGINES,
) -> None:
    """Mark each variant's engines passed or not, and the variant deployed or not, with why.

    `results[name][engine]` holds that engine's test-split accuracy: INT8 kernels differ
    between engines, so each engine passes the gate on its own answers. CPU variants deploy
    only on `allowed` engines (the backends the serving host has). The repository holds
    one TensorRT model, so the pruned TensorRT graph is preferred when both pass.
    """
    ref = results[REFERENCE[0]][REFERENCE[1]]
    reference = ref["top1"]
    trt_chosen = False
    for v in sorted(variants, key=lambda v: not v.pruned):
        r = results[v.name]
        for engine in v.engines:
            acc = r[engine]
            acc["top1_drop"] = round(100 * (reference - acc["top1"]), 3)
            # reported beside the gate, in points: macro-F1 always, HTER for binary tasks
            for key in ("macro_f1", "hter"):
                if key in acc and key in ref:
                    acc[f"{key}_change"] = round(100 * (acc[key] - ref[key]), 3)
            acc["passed"] = acc["top1_drop"] <= max_drop
        usable = v.engines if v.target == "tensorrt" else [e for e in v.engines if e in allowed]
        passing = [e for e in usable if r[e]["passed"]]
        r["usable"], r["passing"], r["deployed"], r["why"] = usable, passing, bool(passing), ""
        if not usable:
            r["why"] = f"none of its engines {list(v.engines)} is in repository.engines"
        elif not passing:
            best = min(r[e]["top1_drop"] for e in usable)
            r["why"] = f"top-1 drop {best:.2f} points > {max_drop}"
        elif v.target == "tensorrt" and trt_chosen:
            r["deployed"] = False
            r["why"] = f"{spec.name}_trt holds the pruned TensorRT graph (one per repository)"
        elif v.target == "tensorrt":
            trt_chosen = True
        r["triton_model"] = triton_name(v, spec) if r["deployed"] else None


def serving_speed(timing: dict) -> float:
    """Images/s at the batch sizes a served model sees: one image at a time at low load (the
    batcher waits for nothing), about 8 under load; their geometric mean, so an engine twice
    as slow for one image does not win on a 1% gain at batch 8."""
    return math.sqrt(1000.0 / timing["latency_ms_bs1"] * timing["throughput_bs8"])


def choose_engines(variants: list[Variant], results: dict, timings: dict) -> None:
    """Each variant's engine: the fastest (serving_speed) among those that passed the gate
    (for the record, the most accurate when none did), with a note on any faster one."""
    for v in variants:
        r = results[v.name]

        def speed(engine: str, name: str = v.name) -> float:
            return serving_speed(timings[timing_key(name, engine)])

        if r["passing"]:
            r["engine"] = max(r["passing"], key=speed)
        else:
            r["engine"] = min(v.engines, key=lambda e: r[e]["top1_drop"])
        faster = [e for e in v.engines if r["passing"] and speed(e) > speed(r["engine"])]
        r["engine_note"] = "; ".join(
            f"{e} is faster but not in repository.engines"
            if e not in r["usable"]
            else f"{e} is faster but drops {r[e]['top1_drop']:.2f} points"
            for e in faster
        )


def rows(variants: list[Variant], results: dict, timings: dict, counts: dict) -> list[dict]:
    """One report row per variant, with its chosen engine's figures and every engine's
    beside them; `counts` maps fp32/pruned to (MACs, params)."""
    fp32_throughput = timings[timing_key(*REFERENCE)]["throughput_bs8"]
    out = []
    for v in variants:
        macs, params = counts["pruned" if v.pruned else "fp32"]
        r = results[v.name]
        acc, t = r[r["engine"]], timings[timing_key(v.name, r["engine"])]
        row = {
            "name": v.name,
            "target": v.target,
            "precision": v.precision,
            "pruned": v.pruned,
            "file": v.path.name,
            "size_bytes": v.path.stat().st_size,
            "params": params,
            "macs": macs,
            "mmacs": macs / 1e6,
            "engine": r["engine"],
            "top1": round(acc["top1"], 4),
            "top5": round(acc["top5"], 4),
            "macro_f1": round(acc["macro_f1"], 4),
            "macro_f1_change": acc.get("macro_f1_change"),
            "hter": round(acc["hter"], 4) if "hter" in acc else None,
            "hter_change": acc.get("hter_change"),
            "top1_drop": acc["top1_drop"],
            "deployed": r["deployed"],
            "why": r["why"],
            "engine_note": r["engine_note"],
            "triton_model": r["triton_model"],
            "latency_ms_bs1": t["latency_ms_bs1"],
            "throughput_bs8": t["throughput_bs8"],
            "speedup_bs8": round(t["throughput_bs8"] / fp32_throughput, 3),
            "engines": {},
        }
        for e in v.engines:
            te = timings[timing_key(v.name, e)]
            row["engines"][e] = {
                "top1": round(r[e]["top1"], 4),
                "top1_drop": r[e]["top1_drop"],
                "passed": r[e]["passed"],
                "latency_ms_bs1": te["latency_ms_bs1"],
                "throughput_bs8": te["throughput_bs8"],
            }
            row[f"{e}_top1"], row[f"{e}_bs8"] = r[e]["top1"], te["throughput_bs8"]
            row[f"{e}_bs1"] = te["latency_ms_bs1"]
        out.append(row)
    return out


def best_cpu(report_rows: list[dict]) -> dict | None:
    """The deployed CPU variant with the highest batch-8 throughput (the ensemble's target)."""
    deployed = [r for r in report_rows if r["deployed"] and r["target"] == "cpu"]
    return max(deployed, key=lambda r: r["throughput_bs8"], default=None)
