import sys

import pytest
import torch

from optimize import tensorrt


@pytest.fixture
def no_cuda(monkeypatch):
    """The CPU host's path, on any host: a CUDA machine runs these tests too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_no_cuda_prints_one_line_and_does_not_build(tiny_onnx, tmp_path, capsys, no_cuda):
    result = tensorrt.try_build(tiny_onnx, tmp_path / "model.plan", 1, 8, 32)
    assert result == {"built": False, "reason": "no CUDA device"}
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"TensorRT: no CUDA device, skipped ({tensorrt.SKIP_HINT})"]
    assert not (tmp_path / "model.plan").exists()


def test_missing_tensorrt_module_is_reported_not_raised(tiny_onnx, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    result = tensorrt.try_build(tiny_onnx, tmp_path / "model.plan", 1, 8, 32)
    assert result == {"built": False, "reason": "tensorrt is not installed"}
    assert "skipped" in capsys.readouterr().out


def test_standalone_cli_fails_cleanly_without_cuda(tiny_onnx, tmp_path, capsys, no_cuda):
    args = ["--onnx", str(tiny_onnx), "--out", str(tmp_path / "m.plan"), "--opt", "4"]
    assert tensorrt.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert tensorrt.main([*args[:4], "--min", "8", "--opt", "4"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_builds_a_plan_from_the_qdq_graph(tiny_onnx, tiny_spec, tiny_arrays, tmp_path):
    pytest.importorskip("tensorrt")
    from optimize.config import QuantizeConfig
    from optimize.quantize import Calibration, preprocess, quantize

    pre = preprocess(tiny_onnx, tmp_path / "pre.onnx")
    cal = Calibration(pre, tiny_arrays["train"].x[:64], tiny_spec.input_name, tmp_path)
    qdq = quantize(cal, tmp_path / "qdq.onnx", "tensorrt", "minmax", QuantizeConfig())
    plan = tensorrt.build_plan(qdq, tmp_path / "model.plan", 1, 8, 32)
    assert plan.stat().st_size > 0
