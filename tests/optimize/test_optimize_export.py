from pathlib import Path

import numpy as np
import onnx
import pytest

from optimize.config import OptimizeError
from optimize.evaluate import session
from optimize.export import parity


def test_onnx_matches_pytorch_with_a_dynamic_batch(tiny_onnx, tiny_model, tiny_spec, tiny_arrays):
    graph = onnx.load(str(tiny_onnx)).graph
    assert [i.name for i in graph.input] == [tiny_spec.input_name]
    assert [o.name for o in graph.output] == [tiny_spec.output_name]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert onnx.load(str(tiny_onnx)).opset_import[0].version >= 17
    batch = tiny_arrays["val"].x[:16]
    assert parity(tiny_model, tiny_onnx, tiny_spec, batch, 1e-4) <= 1e-4
    sess = session(tiny_onnx, threads=1)
    for n in (1, 5):
        out = sess.run(None, {tiny_spec.input_name: batch[:n]})[0]
        assert out.shape == (n, tiny_spec.num_classes)


def test_parity_failure_is_an_error(tiny_onnx, tiny_model, tiny_spec, tiny_arrays):
    with pytest.raises(OptimizeError, match="max abs diff"):
        parity(tiny_model, tiny_onnx, tiny_spec, tiny_arrays["val"].x[:4] + 0, -1.0)
    assert np.isfinite(parity(tiny_model, tiny_onnx, tiny_spec, tiny_arrays["val"].x[:4], 1e-4))


def test_probabilities_are_the_softmax_of_the_logits(tiny_onnx, tiny_spec, tiny_arrays, tmp_path):
    import shutil

    from optimize.export import add_probabilities

    path = add_probabilities(Path(shutil.copy(tiny_onnx, tmp_path / "m.onnx")), tiny_spec)
    x = tiny_arrays["val"].x[:16]
    logits, probs = session(path, threads=1).run(None, {tiny_spec.input_name: x})
    before = session(tiny_onnx, threads=1).run(None, {tiny_spec.input_name: x})[0]
    np.testing.assert_array_equal(logits, before)  # the logits themselves are untouched
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all() and (np.argsort(probs, axis=1) == np.argsort(logits, axis=1)).all()
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-5)
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert names == [tiny_spec.output_name, tiny_spec.probabilities_name]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_model_taking_pixels_answers_as_the_float_one(tiny_onnx, tiny_spec, tmp_path, engine):
    """take_pixels: the served model normalises uint8 pixels itself, bit for bit as
    contract.normalize does before the float model, on both engines that serve it."""
    import shutil
    from dataclasses import replace

    from contract import normalize
    from optimize.evaluate import runner
    from optimize.export import pixels_parity, take_pixels

    path = take_pixels(Path(shutil.copy(tiny_onnx, tmp_path / "m.onnx")), tiny_spec)
    assert take_pixels(path, tiny_spec) == path  # a second call leaves it as it is
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [n.op_type for n in graph.node[:3]] == ["Cast", "Mul", "Sub"]
    spec = replace(tiny_spec, dtype="uint8")
    shape = (5, spec.channels, spec.height, spec.width)
    pixels = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    want = runner(tiny_onnx, 1, engine)(normalize(pixels, spec))
    np.testing.assert_array_equal(runner(path, 1, engine)(pixels), want)
    assert pixels_parity(tiny_onnx, path, spec) == 0.0
