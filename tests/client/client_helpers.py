"""Helpers shared by the client tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from serve_helpers import SPEC, png_bytes

from client import infer

ENSEMBLE = SPEC.name


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(array))
    return path


def random_image(rng: np.random.Generator, rgb: bool = False) -> np.ndarray:
    shape = (40, 30, 3) if rgb else (28, 28)  # RGB ones exercise conversion and resizing
    return rng.integers(0, 256, shape, dtype=np.uint8)


def run_infer(capsys, *argv) -> tuple[int, str, str]:
    """client/infer.py's main in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = infer.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def reference_top(
    ort_session, paths: list[Path], k: int, scores: str = "probabilities"
) -> list[list[tuple[str, float]]]:
    """Top-k (label, score) per image from contract.preprocess + in-process ONNX Runtime."""
    from contract import preprocess

    x = np.stack([preprocess(p, SPEC) for p in paths])
    values = ort_session.run([scores], {"input": x})[0]
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return [
        [(SPEC.labels[i], float(row[i])) for i in idx]
        for row, idx in zip(values, order, strict=True)
    ]
