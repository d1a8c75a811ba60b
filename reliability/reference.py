"""Known answers: contract.model_input + the served classifier file in process, on the engine
and with the parameters its config names (serve.local: ONNX Runtime or OpenVINO)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from client.connection import Triton
from contract import model_input
from contract.spec import DTYPES
from reliability.deploy import Deployment
from reliability.errors import ReliabilityError
from serve.local import Local
from serve.repository import IMAGE_INPUT


class WrongAnswer(AssertionError):
    """The server answered, but not what the same model file says in process."""


class Reference:
    def __init__(self, deployment: Deployment):
        self.spec = deployment.spec
        self.model = Local(deployment.repo / deployment.classifier)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.model(batch)[self.spec.output_name]

    def of_image(self, data: bytes) -> np.ndarray:
        return self.logits(model_input(data, self.spec)[None])[0]


def encode(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def sample_image(rng: np.random.Generator, size: tuple[int, int], mode: str = "L") -> Image.Image:
    """Smooth blobs plus noise: unlike pure noise, the model's classes differ between images."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.5)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    base = 255 * blob + rng.normal(0, 20, (h, w))
    bands = [np.clip(base * rng.uniform(0.5, 1.0), 0, 255) for _ in range(len(mode))]
    array = np.stack(bands, axis=-1).astype(np.uint8)
    return Image.fromarray(array[..., 0] if mode == "L" else array, mode)


@dataclass(frozen=True)
class Probe:
    """One request with a known top-1 answer; send() raises on an error or a wrong answer."""

    model: str
    input_name: str
    output_name: str
    datatype: str
    array: np.ndarray
    expected: int

    def send(self, triton: Triton) -> None:
        tensor = triton.input(self.input_name, self.array, self.datatype)
        outputs = [triton.output(self.output_name)]
        result = triton.call("infer", self.model, [tensor], outputs=outputs, retry=False)
        got = int(np.argmax(result.as_numpy(self.output_name)[0]))
        if got != self.expected:
            raise WrongAnswer(f"{self.model}: top-1 {got}, expected {self.expected}")


def probes(deployment: Deployment, reference: Reference, n: int, seed: int = 0) -> list[Probe]:
    """`n` images, each as raw bytes to the ensemble and as a tensor to the classifier.

    Only images whose top-1 wins by a clear margin: batching may move logits by ~1e-6.
    """
    spec, rng, found = deployment.spec, np.random.default_rng(seed), []
    for _ in range(50 * n):
        if len(found) >= 2 * n:
            break
        data = encode(sample_image(rng, (spec.width, spec.height), spec.color_mode))
        x = model_input(data, spec)[None]
        logits = reference.logits(x)[0]
        second, first = np.sort(logits)[-2:]
        if first - second < 1e-3:
            continue
        top = int(np.argmax(logits))
        raw = np.array([[data]], dtype=np.object_)
        found.append(Probe(deployment.ensemble, IMAGE_INPUT, spec.output_name, "BYTES", raw, top))
        found.append(
            Probe(
                deployment.classifier, spec.input_name, spec.output_name, DTYPES[spec.dtype], x, top
            )
        )
    if not found:
        raise ReliabilityError(f"{deployment.classifier} gives no image a clear top-1 answer")
    return found
