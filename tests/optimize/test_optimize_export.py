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
