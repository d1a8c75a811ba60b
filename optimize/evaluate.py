"""Accuracy and speed of ONNX models, measured in-process with ONNX Runtime on the CPU."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from optimize.config import BenchConfig
from train.metrics import classification_metrics


def session(path: Path, threads: int) -> ort.InferenceSession:
    """One ORT CPU session; every variant gets the same options so timings compare."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # ORT warns about every Q/DQ pair it keeps in float
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def predict(
    sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 256, desc: str = ""
) -> np.ndarray:
    name = sess.get_inputs()[0].name
    starts = range(0, len(x), batch_size)
    bar = tqdm(starts, desc=desc or "ort", unit="batch", leave=False, disable=not desc)
    return np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0] for i in bar])


def accuracy(sess: ort.InferenceSession, x: np.ndarray, y: np.ndarray, desc: str = "") -> dict:
    m = classification_metrics(predict(sess, x, desc=desc), y)
    return {"top1": m["top1"], "top5": m["top5"], "macro_f1": m["macro_f1"], "n": m["n"]}


def _time_calls(sess: ort.InferenceSession, feed: dict, seconds: float) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return times


def benchmark(paths: dict[str, Path], sample: np.ndarray, cfg: BenchConfig) -> dict[str, dict]:
    """Latency at batch 1 and throughput at batch 8, all variants side by side.

    Rounds interleave the variants (in a rotating order), so load from other processes on
    the shared cores hits every variant alike; medians over all rounds are reported.
    """
    sessions = {name: session(p, cfg.threads) for name, p in paths.items()}
    feeds = {}
    for name, sess in sessions.items():
        input_name = sess.get_inputs()[0].name
        feeds[name] = {bs: {input_name: np.ascontiguousarray(sample[:bs])} for bs in (1, 8)}
        for _ in range(cfg.warmup):
            for feed in feeds[name].values():
                sess.run(None, feed)
    times: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in sessions}
    names = list(sessions)
    for r in tqdm(range(cfg.rounds), desc="timing rounds", unit="round", leave=False):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for bs in (1, 8):
                times[name][bs] += _time_calls(sessions[name], feeds[name][bs], cfg.seconds)
    return {
        name: {
            "latency_ms_bs1": round(1000 * float(np.median(t[1])), 4),
            "throughput_bs8": round(8 / float(np.median(t[8])), 1),
            "calls": len(t[1]) + len(t[8]),
        }
        for name, t in times.items()
    }
