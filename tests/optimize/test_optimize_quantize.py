import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optimize.config import QuantizeConfig
from optimize.data import Arrays
from optimize.evaluate import predict, runner
from optimize.quantize import (
    ArrayReader,
    Calibration,
    preprocess,
    quantize,
    quantize_best,
    stem_nodes,
)

# A 1-epoch model on 300 images has nearly tied logits, so INT8 rounding flips more of its
# predictions than it would on a trained model (where the default gate is 1 point). These
# bounds still catch a broken graph (wrong scales, swapped zero points), which lands at chance.
MIN_AGREEMENT = 0.85
MAX_TOP1_GAP = 0.05


def _zero_points(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]


@pytest.fixture(scope="module")
def pre(tiny_onnx, tmp_path_factory):
    return preprocess(tiny_onnx, tmp_path_factory.mktemp("q") / "pre.onnx")


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_quantized_graph_runs_and_agrees_with_fp32(pre, tiny_onnx, tiny_spec, tiny_arrays, target):
    out = pre.with_name(f"{target}.onnx")
    cal = Calibration(pre, tiny_arrays["train"].x[:128], tiny_spec.input_name, out.parent)
    quantize(cal, out, target, "minmax", QuantizeConfig())
    test = tiny_arrays["test"]
    ref = predict(runner(tiny_onnx, 1), test.x).argmax(1)
    got = predict(runner(out, 1), test.x).argmax(1)
    assert (ref == got).mean() >= MIN_AGREEMENT
    assert abs((ref == test.y).mean() - (got == test.y).mean()) <= MAX_TOP1_GAP
    zero_points = _zero_points(out)
    assert zero_points
    model = onnx.load(str(out))
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    (stem,) = (n for n in model.graph.node if n.name in stem_nodes(pre) and n.op_type == "Conv")
    assert (stem.input[1] in floats) == (target == "cpu")  # the cpu graph keeps its stem float
    if target == "cpu":  # asymmetric uint8 activations
        assert all(z.dtype == np.uint8 for z in zero_points)
    else:  # TensorRT: symmetric int8, zero point 0, biases left in float
        assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
        int32 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32}
        assert not any(
            n.input[0] in int32 for n in model.graph.node if n.op_type == "DequantizeLinear"
        )


def test_calibration_method_is_chosen_by_validation_accuracy(pre, tiny_spec, tiny_arrays):
    work = pre.parent / "best"
    work.mkdir()
    out = work / "best.onnx"
    val = tiny_arrays["val"]
    cal = Calibration(pre, tiny_arrays["train"].x[:100], tiny_spec.input_name, work)
    cfg = QuantizeConfig(methods=["minmax", "percentile"], fallback=False)
    record = quantize_best(cal, out, "cpu", Arrays(val.x, val.y), 1.0, 1.0, cfg, 1)
    tops = {m: r["val_top1"] for m, r in record["methods"].items()}
    assert set(tops) == {"minmax", "percentile"}
    assert tops[record["method"]] == max(tops.values())
    assert out.is_file() and sorted(p.name for p in work.glob("best*")) == ["best.onnx"]


def test_reader_batches_are_equal_sized():
    reader = ArrayReader(np.zeros((500, 1, 4, 4), np.float32), "input")
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["input"]))
    assert sum(sizes) == 500 and len(set(sizes)) == 1
