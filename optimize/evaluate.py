"""Accuracy and speed of ONNX models, measured in-process on the CPU engines that serve them:
ONNX Runtime and OpenVINO, each reading the same ONNX file as it is, set up as the server
sets it up (one stream, `threads` threads)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
from tqdm import tqdm

from optimize.config import BenchConfig
from serve.backends.backend_core import STATIC_IMAGES, OpenVINOBatches
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


Runner = Callable[[np.ndarray], np.ndarray]  # a batch of inputs -> the first output (logits)


def openvino_properties(threads: int) -> dict[str, str]:
    """What the model config's `parameters` give NVIDIA's OpenVINO backend (and ours)."""
    return {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip


def openvino_compile_properties(threads: int) -> dict[str, str]:
    """What every in-process OpenVINO model here compiles with: the config's properties, and
    threads left unpinned as serve's backend leaves them (processes that each pin their
    threads from the first core share one core)."""
    return {**openvino_properties(threads), "ENABLE_CPU_PINNING": "NO"}


@functools.cache
def openvino_core() -> ov.Core:
    """One OpenVINO runtime for the process. Its CPU plugin points the thread's alternate
    signal stack at a buffer of its own and restores it when torn down: with a Core per
    model, stacks end up restored to freed buffers, and the next signal (a SIGTERM that
    should stop optimize cleanly) crashes the process instead."""
    return ov.Core()


def runner(path: Path, threads: int, engine: str = "onnxruntime") -> Runner:
    """The model at `path` on `engine`, any batch size; on OpenVINO, compiled per batch size
    as serve's backend compiles it (backend_core.OpenVINOBatches, within the same budget)."""
    if engine == "openvino":
        core = openvino_core()
        batches = OpenVINOBatches(
            core, core.read_model(str(path)), openvino_compile_properties(threads),
            STATIC_IMAGES,
        )  # fmt: skip
        return lambda x: batches.infer({0: x})[0]
    sess = session(path, threads)
    feed, first = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return lambda x: sess.run([first], {feed: x})[0]


def predict(run: Runner, x: np.ndarray, batch_size: int = 256, desc: str = "") -> np.ndarray:
    starts = range(0, len(x), batch_size)
    bar = tqdm(starts, desc=desc or "predict", unit="batch", leave=False, disable=not desc)
    return np.concatenate([run(np.ascontiguousarray(x[i : i + batch_size])) for i in bar])


def accuracy(
    run: Runner, x: np.ndarray, y: np.ndarray, desc: str = "", binary: tuple | None = None
) -> dict:
    """top-1, top-5, macro-F1; for a binary task (`binary` = (positive class index,
    threshold), as training scores it) also its HTER, the mean of FAR and FRR."""
    positive, threshold = binary or (None, 0.5)
    m = classification_metrics(predict(run, x, desc=desc), y, positive, threshold)
    keys = ("top1", "top5", "macro_f1", "n") + (("hter",) if binary else ())
    return {k: m[k] for k in keys}


def _time_calls(run: Runner, x: np.ndarray, seconds: float) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return times


def benchmark(models: dict[str, Runner], sample: np.ndarray, cfg: BenchConfig) -> dict[str, dict]:
    """Latency at batch 1 and throughput at batch 8, all models side by side.

    Rounds interleave the models (in a rotating order), so load from other processes on
    the shared cores hits every model alike; medians over all rounds are reported.
    """
    batches = {bs: np.ascontiguousarray(sample[:bs]) for bs in (1, 8)}
    for run in models.values():
        for _ in range(cfg.warmup):
            for x in batches.values():
                run(x)
    times: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in models}
    names = list(models)
    for r in tqdm(range(cfg.rounds), desc="timing rounds", unit="round", leave=False):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for bs, x in batches.items():
                times[name][bs] += _time_calls(models[name], x, cfg.seconds)
    return {
        name: {
            "latency_ms_bs1": round(1000 * float(np.median(t[1])), 4),
            "throughput_bs8": round(8 / float(np.median(t[8])), 1),
            "calls": len(t[1]) + len(t[8]),
        }
        for name, t in times.items()
    }
