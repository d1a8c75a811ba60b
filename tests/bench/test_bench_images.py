"""The raw path's inputs: perf_analyzer's BYTES --input-data file, decoded back, and the
load generator's requests of several encoded images."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
from serve_helpers import png_bytes

from bench.images import as_batches, perf_analyzer_data, write_perf_analyzer_data
from bench.loadgen import Request, infer_request


def _images() -> list[bytes]:
    rng = np.random.default_rng(0)
    # PNGs of different sizes, and bytes whose length has a zero byte and a high byte
    pngs = [png_bytes(rng.integers(0, 256, (s, s), dtype=np.uint8)) for s in (5, 28, 90)]
    return [*pngs, b"\x00" * 256, b"\xff" * 70_000]


def _elements(blob: bytes) -> list[bytes]:
    """Triton's BYTES serialization read back: uint32 little-endian length, then the bytes."""
    out = []
    while blob:
        (n,) = struct.unpack("<I", blob[:4])
        out.append(blob[4 : 4 + n])
        blob = blob[4 + n :]
    return out


def test_perf_analyzer_input_file_decodes_back_to_the_images(tmp_path):
    images = _images()
    path = write_perf_analyzer_data(tmp_path / "input.json", "image", images)
    data = json.loads(path.read_text())
    assert list(data) == ["data"] and len(data["data"]) == len(images)
    for step, image in zip(data["data"], images, strict=True):
        assert list(step) == ["image"] and list(step["image"]) == ["b64"]
        blob = base64.b64decode(step["image"]["b64"])
        assert blob[:4] == len(image).to_bytes(4, "little")  # the prefix perf_analyzer needs
        assert _elements(blob) == [image]  # one batch-1 element a step
    assert perf_analyzer_data("image", images) == data


def test_requests_cycle_through_the_images_and_carry_them_serialized():
    images = _images()
    singles = as_batches(images, 1)
    assert [b.shape for b in singles] == [(1, 1)] * len(images)
    assert [b[0, 0] for b in singles] == images
    (both,) = as_batches(images[:3], 4)  # more images a request than there are: cycled
    assert both.shape == (4, 1) and list(both[:, 0]) == [*images[:3], images[0]]
    body, headers = infer_request(Request("image", "BYTES", both), "probabilities")
    size = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:size])
    assert header["inputs"][0] == {
        "name": "image", "shape": [4, 1], "datatype": "BYTES",
        "parameters": {"binary_data_size": len(body) - size},
    }  # fmt: skip
    assert _elements(body[size:]) == [*images[:3], images[0]]
