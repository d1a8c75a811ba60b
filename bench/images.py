"""The raw path's inputs: encoded images from the run's test split, as the ensemble takes them.

Triton's BYTES tensors travel serialized: each element is a 4-byte little-endian length, then
its bytes (tritonclient.utils.serialize_byte_tensor). The HTTP requests of the load generator
and perf_analyzer's `--input-data` file (each element's `b64`) carry exactly that.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import numpy as np
from tritonclient.utils import serialize_byte_tensor

from client.verify import ClientError, read_report, test_split
from contract import ModelSpec
from contract.atomic import atomic_write_text


class ImagesError(ValueError):
    pass


def test_images(run: Path, data: str | None, spec: ModelSpec, n: int, seed: int) -> list[Path]:
    """`n` files of the run's test split (the folder and split client/verify.py uses; `data`
    overrides the folder), a fixed random pick so every run sends the same images."""
    try:
        report = read_report(run) if (run / "optimize_report.json").is_file() else {}
        root, files, _ = test_split(run, data, report, spec)
    except ClientError as e:
        raise ImagesError(f"test images of {run}: {e}") from None
    files = sorted(files)
    picked = random.Random(seed).sample(files, min(n, len(files)))
    if not picked:
        raise ImagesError(f"{root}: no test images")
    return picked


def as_batches(images: list[bytes], batch: int) -> list[np.ndarray]:
    """Requests of `batch` images each, cycling over `images`: object arrays [batch, 1], the
    ensemble's input shape (one encoded image per batch item)."""
    out = []
    for r in range(max(1, len(images) // batch)):
        chosen = [images[(r * batch + j) % len(images)] for j in range(batch)]
        out.append(np.array(chosen, dtype=np.object_).reshape(batch, 1))
    return out


def perf_analyzer_data(input_name: str, images: list[bytes]) -> dict:
    """perf_analyzer's `--input-data` JSON: one step per image, each one batch-1 element of
    the BYTES input, base64 of its serialized form (length prefix included, as it requires)."""
    steps = []
    for data in images:
        element = serialize_byte_tensor(np.array([data], dtype=np.object_)).item()
        steps.append({input_name: {"b64": base64.b64encode(element).decode("ascii")}})
    return {"data": steps}


def write_perf_analyzer_data(path: Path, input_name: str, images: list[bytes]) -> Path:
    return atomic_write_text(path, json.dumps(perf_analyzer_data(input_name, images)))
