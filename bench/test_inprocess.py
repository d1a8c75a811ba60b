"""In-process baselines as pytest-benchmark cases; `bench.inprocess` runs this file.

Not a unit test: it is collected only when run explicitly with BENCH_INPROCESS_CASES set to a
JSON file of cases ({id, kind: onnx|eager, path, variant, batch, threads, shape}).
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


def _onnx_runner(case: dict, x: np.ndarray):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = case["threads"]
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(case["path"], opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def _eager_runner(case: dict, x: np.ndarray):
    import torch

    from contract import load_spec
    from train.checkpoint import model_from_checkpoint, read_checkpoint

    if case["threads"]:
        torch.set_num_threads(case["threads"])
    case["threads"] = torch.get_num_threads()  # state what "default" meant on this machine
    model = model_from_checkpoint(read_checkpoint(case["path"]), load_spec(case["spec_path"]))
    model.eval()
    tensor = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return model(tensor)

    return run


@pytest.mark.skipif(not CASES, reason=f"run through `python -m bench` ({CASES_ENV} unset)")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_inprocess(benchmark, case):
    x = np.random.default_rng(0).standard_normal((case["batch"], *case["shape"]))
    x = x.astype(np.float32)
    make = _eager_runner if case["kind"] == "eager" else _onnx_runner
    run = make(case, x)
    run()  # first call pays for allocations and lazy initialisation
    before = noise.sample()
    benchmark(run)
    after = noise.sample()
    benchmark.extra_info.update(
        {k: case[k] for k in ("variant", "kind", "batch", "threads")}
        | {"noise": noise.load_between(before, after)}
    )
