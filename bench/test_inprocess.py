"""In-process baselines as pytest-benchmark cases; `bench.inprocess` runs this file.

Not a unit test: it is collected only when run explicitly with BENCH_INPROCESS_CASES set to a
JSON file of cases ({id, kind: onnx|eager|decode|preprocess, variant, batch, threads, and
path, engine and shape for models; files and spec_path for the raw path's decode and
preprocess, one call going through all `batch` files}).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench import noise

CASES_ENV = "BENCH_INPROCESS_CASES"
CASES = json.loads(Path(os.environ[CASES_ENV]).read_text()) if os.environ.get(CASES_ENV) else []


def _images(case: dict) -> np.ndarray:
    """Random inputs of the case's shape: uint8 pixels, or normalised-looking floats (eager)."""
    rng, shape = np.random.default_rng(0), (case["batch"], *case["shape"])
    if case.get("dtype") == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def _onnx_runner(case: dict):
    # On the engine the variant is deployed with, set up as the server sets it up.
    from optimize.evaluate import runner

    run = runner(Path(case["path"]), case["threads"], case["engine"])
    x = _images(case)
    return lambda: run(x)


def _decode_runner(case: dict):
    """Bare Pillow decode of every file (no mode conversion, resize or arithmetic)."""
    import io

    from PIL import Image

    data = [Path(f).read_bytes() for f in case["files"]]

    def run():
        for d in data:
            Image.open(io.BytesIO(d)).load()

    return run


def _contract_runner(name: str):
    """contract.<name> on every file's encoded bytes: `preprocess` (decode to normalised
    floats), or `model_input` (what the server's preprocess model runs for the served spec)."""

    def make(case: dict):
        import contract
        from contract import load_spec

        step = getattr(contract, name)
        spec, data = load_spec(case["spec_path"]), [Path(f).read_bytes() for f in case["files"]]

        def run():
            for d in data:
                step(d, spec)

        return run

    return make


def _eager_runner(case: dict):
    import torch

    from contract import load_spec
    from train.checkpoint import model_from_checkpoint, read_checkpoint

    if case["threads"]:
        torch.set_num_threads(case["threads"])
    case["threads"] = torch.get_num_threads()  # state what "default" meant on this machine
    model = model_from_checkpoint(read_checkpoint(case["path"]), load_spec(case["spec_path"]))
    model.eval()
    tensor = torch.from_numpy(_images(case))

    def run():
        with torch.inference_mode():
            return model(tensor)

    return run


RUNNERS = {
    "onnx": _onnx_runner,
    "eager": _eager_runner,
    "decode": _decode_runner,
    "preprocess": _contract_runner("preprocess"),
    "model_input": _contract_runner("model_input"),
}


@pytest.mark.skipif(not CASES, reason=f"run through `python -m bench` ({CASES_ENV} unset)")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_inprocess(benchmark, case):
    run = RUNNERS[case["kind"]](case)
    run()  # first call pays for allocations and lazy initialisation
    before = noise.sample()
    benchmark(run)
    after = noise.sample()
    benchmark.extra_info.update(
        {k: case[k] for k in ("variant", "kind", "batch", "threads")}
        | {"noise": noise.load_between(before, after)}
    )
