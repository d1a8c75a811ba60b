"""One preprocessing everywhere: the training data loader, the client's --send tensor path and
the server's `<name>_preprocess` model give bit-identical tensors for the same file; and a
classifier taking uint8 pixels (optimize's default) answers as its float self."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import CLASSIFIER, SPEC, export_onnx, local_server, write_classifier

from client.connection import Policy, Triton
from client.infer import Classifier
from contract import ModelSpec, normalize
from optimize.export import take_pixels
from serve.repository import IMAGE_INPUT, add_preprocess_and_ensemble
from train.data import Split, load_split

pytestmark = pytest.mark.slow
RGB_SPEC = ModelSpec(
    name="rgb", arch="tinycnn", labels=tuple(f"c{i}" for i in range(10)), height=48, width=40,
    color_mode="RGB", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
    resize_policy="resize_center_crop", resize_scale=1.15, interpolation="bicubic",
)  # fmt: skip
# The gray spec as optimize serves it by default: the classifier takes uint8 pixels.
PIXELS_SPEC = replace(SPEC, name="pixels", dtype="uint8")
PIXELS_CLASSIFIER = "pixels_classifier"


def _save(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def _images(folder: Path) -> list[Path]:
    """JPEGs and PNGs of several sizes and modes, the odd ones included."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (210, 300, 3), dtype=np.uint8))
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees on display
    rgb.save(rotated, "JPEG", exif=exif.tobytes())
    folder.mkdir()
    return [
        _save(folder / "gray28.png", Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8))),
        _save(folder / "rgb300x210.jpg", rgb, quality=90),
        _save(folder / "big1200x900.jpg", rgb.resize((1200, 900)), quality=85),  # DCT scaling
        _save(folder / "gray.jpg", rgb.convert("L"), quality=90),
        _save(folder / "cmyk.jpg", rgb.convert("CMYK"), quality=90),
        _save(folder / "rgba.png", rgb.convert("RGBA").resize((64, 48))),
        _save(folder / "palette.png", rgb.convert("P").resize((33, 77))),
        _save(
            folder / "deep16.png",
            Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16)),
        ),  # fmt: skip
        _save(folder / "exif.jpg", Image.open(io.BytesIO(rotated.getvalue())), exif=exif.tobytes()),
    ]


def _net(channels: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()  # fmt: skip


@pytest.fixture(scope="module")
def triton(tmp_path_factory, backend_dir):
    """One server with two ensembles: the 1-channel 28 px spec and an RGB centre-crop one."""
    repo = tmp_path_factory.mktemp("parity_repo")
    onnx = tmp_path_factory.mktemp("onnx")
    write_classifier(repo, export_onnx(_net(1), onnx / "gray.onnx"))
    add_preprocess_and_ensemble(repo, SPEC, CLASSIFIER, 8, instances=2)
    rgb = repo / "rgb_classifier"
    (rgb / "1").mkdir(parents=True)
    export_onnx(_net(3), rgb / "1" / "model.onnx", (3, RGB_SPEC.height, RGB_SPEC.width))
    (rgb / "config.pbtxt").write_text(
        'name: "rgb_classifier"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
        'input [{ name: "input" data_type: TYPE_FP32 dims: [3, 48, 40] }]\n'
        'output [{ name: "logits" data_type: TYPE_FP32 dims: [10] }]\n'
    )
    add_preprocess_and_ensemble(repo, RGB_SPEC, "rgb_classifier", 8)
    pixels = repo / PIXELS_CLASSIFIER
    (pixels / "1").mkdir(parents=True)
    (pixels / "1" / "model.onnx").write_bytes(
        take_pixels(export_onnx(_net(1), onnx / "pixels.onnx"), PIXELS_SPEC).read_bytes()
    )
    (pixels / "labels.txt").write_text((repo / CLASSIFIER / "labels.txt").read_text())
    (pixels / "config.pbtxt").write_text(
        (repo / CLASSIFIER / "config.pbtxt").read_text()
        .replace(f'name: "{CLASSIFIER}"', f'name: "{PIXELS_CLASSIFIER}"')
        .replace("TYPE_FP32 dims: [1, 28, 28]", "TYPE_UINT8 dims: [1, 28, 28]")
    )  # fmt: skip
    add_preprocess_and_ensemble(repo, PIXELS_SPEC, PIXELS_CLASSIFIER, 8)
    with local_server(repo, backend_dir, tmp_path_factory.mktemp("logs")) as server:
        client = Triton(server.http_url, "http", Policy(30.0, 2, 0.2))
        yield client
        client.close()


def _server_tensors(triton: Triton, spec: ModelSpec, paths: list[Path]) -> list[np.ndarray]:
    """Each file's bytes through `<name>_preprocess` alone, as the ensemble's first step."""
    out = []
    for path in paths:
        data = np.array([[path.read_bytes()]], dtype=np.object_)
        tensor = triton.input(IMAGE_INPUT, data, "BYTES")
        result = triton.infer(f"{spec.name}_preprocess", [tensor],
                              [triton.output(spec.input_name)])  # fmt: skip
        out.append(result.as_numpy(spec.input_name)[0])
    return out


@pytest.mark.parametrize("which", ["gray", "rgb"])
def test_loader_client_and_server_tensors_are_identical(triton, tmp_path, which):
    spec, classifier = (SPEC, CLASSIFIER) if which == "gray" else (RGB_SPEC, "rgb_classifier")
    paths = _images(tmp_path / "images")
    split = Split(paths, [0] * len(paths))
    cached, _ = load_split(split, spec, "train", cache_max_mb=64)  # preprocessed once, kept
    lazy, _ = load_split(split, spec, "train", cache_max_mb=0)  # preprocessed per item
    assert cached.cache is not None and lazy.cache is None
    client = Classifier(triton, triton.model(classifier), spec, top_k=1)
    server = _server_tensors(triton, spec, paths)
    for i, path in enumerate(paths):
        loader = cached[i][0].numpy()
        assert loader.shape == (spec.channels, spec.height, spec.width), path.name
        assert loader.dtype == np.float32
        for other in (lazy[i][0].numpy(), client._load(path), server[i]):
            np.testing.assert_array_equal(other, loader, err_msg=path.name)


def test_pixels_through_the_server_are_the_loaders_before_normalising(triton, tmp_path):
    """With a uint8 classifier the server's preprocess model and the client send pixels;
    normalize() of them is, bit for bit, what the training loader feeds the network."""
    paths = _images(tmp_path / "images")
    cached, _ = load_split(Split(paths, [0] * len(paths)), SPEC, "train", cache_max_mb=64)
    client = Classifier(triton, triton.model(PIXELS_CLASSIFIER), PIXELS_SPEC, top_k=1)
    server = _server_tensors(triton, PIXELS_SPEC, paths)
    for i, path in enumerate(paths):
        assert server[i].dtype == np.uint8, path.name
        np.testing.assert_array_equal(client._load(path), server[i], err_msg=path.name)
        np.testing.assert_array_equal(normalize(server[i], SPEC), cached[i][0].numpy())


def test_the_pixels_ensemble_answers_as_the_float_one(triton, tmp_path):
    """The same network behind both ensembles: normalising inside the model changes nothing."""
    for path in _images(tmp_path / "images"):
        data = np.array([[path.read_bytes()]], dtype=np.object_)
        answers = {}
        for spec in (SPEC, PIXELS_SPEC):
            tensor = triton.input(IMAGE_INPUT, data, "BYTES")
            result = triton.infer(spec.name, [tensor], [triton.output(spec.output_name)])
            answers[spec.name] = result.as_numpy(spec.output_name)
        np.testing.assert_array_equal(answers["pixels"], answers["tiny"], err_msg=path.name)


def test_the_client_sends_pixels_to_a_uint8_classifier(triton, tmp_path):
    """--send tensor: UINT8 pixels to the pixels classifier, the same top-3 and scores as
    floats to its float twin."""
    paths = _images(tmp_path / "images")
    tops = {}
    for name, spec in ((CLASSIFIER, SPEC), (PIXELS_CLASSIFIER, PIXELS_SPEC)):
        outcomes = Classifier(triton, triton.model(name), spec, top_k=3).batch(paths)
        assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
        tops[name] = [o.top for o in outcomes]
    assert tops[PIXELS_CLASSIFIER] == tops[CLASSIFIER]
