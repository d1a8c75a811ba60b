"""The server's own view of a measurement: Triton's statistics API, differenced over it.

Per request (averages over the requests the server finished in between): queue wait,
compute_input (gathering inputs), compute_infer (the backend's execute), compute_output;
and the average executed batch size (inference_count / execution_count).
"""

from __future__ import annotations

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def snapshot(stats: dict, model: str) -> dict:
    """The counters of `model` from a get_inference_statistics() answer (HTTP JSON form)."""
    for entry in stats.get("model_stats", []):
        if entry.get("name") == model:
            inference = entry.get("inference_stats", {})
            snap = {
                "inference_count": int(entry.get("inference_count", 0)),
                "execution_count": int(entry.get("execution_count", 0)),
                "success": int(inference.get("success", {}).get("count", 0)),
                "success_ns": int(inference.get("success", {}).get("ns", 0)),
                "fail": int(inference.get("fail", {}).get("count", 0)),
            }
            for phase in PHASES:
                snap[f"{phase}_ns"] = int(inference.get(phase, {}).get("ns", 0))
            return snap
    raise KeyError(f"no statistics for model {model!r}")


def split(before: dict, after: dict) -> dict:
    """Average milliseconds per request in each phase between two snapshots."""
    requests = after["success"] - before["success"]
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    out = {
        "server_requests": requests,
        "server_failures": after["fail"] - before["fail"],
        "avg_batch": round(inferences / executions, 2) if executions else None,
    }
    for key, phase in (("server", "success"), *((p, p) for p in PHASES)):
        ns = after[f"{phase}_ns"] - before[f"{phase}_ns"]
        out[f"{key}_ms"] = round(ns / requests / 1e6, 4) if requests else None
    return out
