"""The engine choice on real models run by both engines: each engine is gated on its own
answers, and each variant serves on the fastest engine that passes."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from optimize.data import Arrays
from optimize.evaluate import accuracy, runner
from optimize.run import evaluate_variants
from optimize.variants import Variant, choose_engines, gate, timing_key
from serve.backends.backend_core import STATIC_IMAGES


def _timing(images_per_s: float) -> dict:
    """A timing as optimize.evaluate measures it, as fast at batch 1 as at batch 8."""
    return {"throughput_bs8": images_per_s, "latency_ms_bs1": 1000.0 / images_per_s}


def _model(path, casts: bool):
    """logits = input, or input through Cast to int8 and back: an out-of-range value wraps
    around on ONNX Runtime (200 -> -56) and saturates on OpenVINO's dynamic-batch model
    (200 -> 127; its copies compiled for one batch size wrap); ONNX leaves it undefined, so
    the engines legitimately disagree."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Identity", ["input"], ["logits"])]
    if casts:
        nodes = [helper.make_node("Cast", ["input"], ["i8"], to=TensorProto.INT8),
                 helper.make_node("Cast", ["i8"], ["logits"], to=TensorProto.FLOAT)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    work = tmp_path_factory.mktemp("engines")
    return [
        Variant("fp32", "cpu", "fp32", False, _model(work / "fp32.onnx", casts=False)),
        Variant("int8", "cpu", "int8", False, _model(work / "int8.onnx", casts=True)),
    ]


@pytest.fixture(scope="module")
def test_split():
    """The true class scores 150-200, the others below 120: every image's top-1 survives
    saturation, and none survives wrapping around. More images than OpenVINO's static copies
    may hold (STATIC_IMAGES): they run as one batch on its dynamic model."""
    n = STATIC_IMAGES + 32
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 120, (n, 4)).astype(np.float32)
    y = rng.integers(0, 4, n)
    x[np.arange(n), y] = rng.uniform(150, 200, n)
    return SimpleNamespace(test=Arrays(x, y))


def test_the_accuracy_that_falls_on_one_engine_only_is_caught(variants, test_split):
    results = evaluate_variants(variants, test_split, threads=1)
    assert results["int8"]["onnxruntime"]["top1"] == 0.0  # wrapped: the true class goes negative
    assert results["int8"]["openvino"]["top1"] == 1.0
    gate(variants, results, 1.0, SimpleNamespace(name="m"))
    assert results["int8"]["passing"] == ["openvino"] and results["int8"]["deployed"]
    gate(variants, results, 1.0, SimpleNamespace(name="m"), allowed=("onnxruntime",))
    assert not results["int8"]["deployed"]  # a host without OpenVINO cannot take it


def test_the_fastest_passing_engine_serves(variants, test_split):
    results = evaluate_variants(variants, test_split, threads=1)
    gate(variants, results, 1.0, SimpleNamespace(name="m"))
    speed = {"onnxruntime": 300.0, "openvino": 200.0}
    timings = {timing_key(v.name, e): _timing(speed[e]) for v in variants
               for e in v.engines}  # fmt: skip
    choose_engines(variants, results, timings)
    assert results["fp32"]["engine"] == "onnxruntime"  # both pass: the faster one
    assert results["int8"]["engine"] == "openvino"  # the faster one fails its gate
    assert "onnxruntime is faster but drops 100.00 points" in results["int8"]["engine_note"]


def test_both_engines_give_the_same_fp32_answers(variants, test_split):
    x = test_split.test.x
    ort_out, ov_out = (runner(variants[0].path, 1, e)(x) for e in ("onnxruntime", "openvino"))
    np.testing.assert_array_equal(ort_out, ov_out)


def test_a_faster_engine_the_host_lacks_is_named_as_such(variants, test_split):
    results = evaluate_variants(variants, test_split, threads=1)
    gate(variants, results, 1.0, SimpleNamespace(name="m"), allowed=("onnxruntime",))
    speed = {"onnxruntime": 100.0, "openvino": 250.0}
    timings = {timing_key(v.name, e): _timing(speed[e]) for v in variants
               for e in v.engines}  # fmt: skip
    choose_engines(variants, results, timings)
    assert results["fp32"]["engine"] == "onnxruntime"
    assert results["fp32"]["engine_note"] == "openvino is faster but not in repository.engines"
    assert results["int8"]["engine"] == "openvino"  # not deployed: its most accurate engine


def test_each_engine_passes_the_gate_on_its_own_answers(tiny_spec):
    """An INT8 variant whose accuracy falls on OpenVINO only deploys on ONNX Runtime, even
    though OpenVINO runs it faster; one that falls on both engines does not deploy."""
    variants = [Variant(n, "cpu", p, False, Path(n)) for n, p in
                [("fp32", "fp32"), ("int8", "int8"), ("bad", "int8")]]  # fmt: skip
    top1 = {"fp32": (0.90, 0.90), "int8": (0.899, 0.86), "bad": (0.85, 0.86)}
    results = {n: dict(zip(("onnxruntime", "openvino"), ({"top1": t} for t in pair), strict=True))
               for n, pair in top1.items()}  # fmt: skip
    gate(variants, results, 1.0, tiny_spec)
    speed = {"onnxruntime": 100.0, "openvino": 180.0}
    timings = {timing_key(v.name, e): _timing(speed[e]) for v in variants
               for e in v.engines}  # fmt: skip
    choose_engines(variants, results, timings)
    assert results["int8"]["passing"] == ["onnxruntime"] and results["int8"]["deployed"]
    assert results["int8"]["engine"] == "onnxruntime"
    assert "openvino is faster but drops 4.00 points" in results["int8"]["engine_note"]
    assert results["fp32"]["engine"] == "openvino"  # both pass: the faster serves
    assert not results["bad"]["deployed"] and "drop 4.00 points" in results["bad"]["why"]


def test_an_engine_much_slower_for_one_image_does_not_serve_for_a_small_gain_at_batch_8(
    variants, test_split
):
    results = evaluate_variants(variants, test_split, threads=1)
    gate(variants, results, 1.0, SimpleNamespace(name="m"))
    timings = {timing_key(v.name, "onnxruntime"): _timing(1000.0) for v in variants}
    # OpenVINO 1% ahead at batch 8, twice as slow for one image (default_pruned_int8's shape)
    ov = {"throughput_bs8": 1010.0, "latency_ms_bs1": 2.0}
    timings |= {timing_key(v.name, "openvino"): ov for v in variants}
    choose_engines(variants, results, timings)
    assert results["fp32"]["engine"] == "onnxruntime" and results["fp32"]["engine_note"] == ""


def test_a_binary_task_reports_hter_and_its_change_beside_the_gate():
    """Spoof-style binary task: each variant's HTER (mean of FAR and FRR at training's
    threshold) and its change against FP32, in points; macro-F1's change for any task."""
    logits = {"fp32": np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]]),
              "int8": np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])}  # fmt: skip
    y = np.array([0, 1, 1, 0])
    results = {n: {e: accuracy(lambda x, n=n: logits[n], y, y, binary=(1, 0.5))
                   for e in ("onnxruntime", "openvino")} for n in logits}  # fmt: skip
    assert results["fp32"]["onnxruntime"]["hter"] == 0.0
    assert results["int8"]["onnxruntime"]["hter"] == 0.25  # FRR 1/2, FAR 0
    variants = [Variant(n, "cpu", n, False, Path(n)) for n in logits]
    gate(variants, results, 30.0, SimpleNamespace(name="m"))
    int8 = results["int8"]["onnxruntime"]
    assert int8["hter_change"] == 25.0 and int8["top1_drop"] == 25.0
    assert int8["macro_f1_change"] < 0
    assert "hter" not in accuracy(lambda x: logits["fp32"], y, y)  # not a binary run
