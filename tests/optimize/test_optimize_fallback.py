"""Per-layer INT8 fallback on a tiny network with one layer made deliberately sensitive."""

import numpy as np
import pytest
import torch
from torch import nn

from contract import ModelSpec
from optimize.config import QuantizeConfig
from optimize.data import Arrays
from optimize.evaluate import predict, runner
from optimize.export import export_onnx
from optimize.fallback import group_of, layer_precisions
from optimize.quantize import Calibration, preprocess, quantize_best

SPEC = ModelSpec(name="fb", arch="seq", labels=tuple("abcdefghij"), height=12, width=12,
                 color_mode="L", mean=(0.5,), std=(0.5,))  # fmt: skip


def sensitive_net() -> nn.Module:
    """Conv 2 ('/2/Conv') carries a huge weight on an input channel that is always zero:
    harmless in FP32, but its INT8 scale then rounds every other weight of conv 2 to zero."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 12 * 12, 10),
    )  # fmt: skip
    with torch.no_grad():
        net[0].weight[7] = 0
        net[0].bias[7] = -1  # channel 7 is 0 after the ReLU, whatever the image
        net[2].weight[:, 7, 1, 1] = 1000 * net[2].weight.abs().max()
    return net.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("fallback")
    fp32 = export_onnx(sensitive_net(), SPEC, work / "fp32.onnx", 17)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 1, 12, 12)).astype(np.float32)
    y = predict(runner(fp32, 1), x).argmax(1)  # FP32's own answers: its top-1 is 100%
    cal = Calibration(preprocess(fp32, work / "pre.onnx"), x[:100], "input", work)
    return cal, Arrays(x[100:], y[100:]), work


def test_the_sensitive_layer_is_the_one_kept_in_fp32(setup):
    cal, val, work = setup
    out = work / "int8.onnx"
    record = quantize_best(cal, out, "cpu", val, 1.0, 1.0, QuantizeConfig(methods=["minmax"]), 1)
    fb = record["fallback"]
    assert fb["steps"][0]["drop"] > 20  # all-INT8 is wrecked by conv 2 ...
    assert fb["kept_fp32"] == ["2"] and fb["met"]  # ... which alone goes back to FP32
    assert max(fb["sensitivity"], key=fb["sensitivity"].get) == "2"
    assert fb["steps"][-1]["drop"] <= 0.75 and all(s["throughput_bs8"] > 0 for s in fb["steps"])
    precision = {row["layer"]: row["precision"] for row in layer_precisions(out)}
    assert precision == {
        "/0/Conv": "fp32",
        "/2/Conv": "fp32",
        "/4/Conv": "int8",
        "/7/Gemm": "int8",
    }  # the stem stays FP32 by the float_stem rule
    assert sorted(p.name for p in work.glob("int8*")) == ["int8.onnx"]  # steps cleaned up


def test_no_fallback_within_budget(setup):
    cal, val, work = setup
    cfg = QuantizeConfig(methods=["minmax"], fallback=False)
    record = quantize_best(cal, work / "plain.onnx", "cpu", val, 1.0, 1.0, cfg, 1)
    assert "fallback" not in record


@pytest.mark.parametrize(
    "node, group",
    [
        ("/_blocks.3/_expand_conv/Conv", "_blocks.3"),
        ("/layer2/layer2.1/conv1/Conv", "layer2/layer2.1"),
        ("/_conv_stem/Conv", "_conv_stem"),
        ("/0/Conv", "0"),
    ],
)
def test_groups_are_blocks_or_top_level_layers(node, group):
    assert group_of(node) == group
