"""Constants and builders shared by the bench tests (fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from serve_helpers import SPEC as SERVE_SPEC
from serve_helpers import export_onnx

from contract import save_spec

MODEL = "tiny"
# The serve tests' contract, on the architecture optimize and bench load from a checkpoint.
SPEC = dataclasses.replace(SERVE_SPEC, name=MODEL, arch="resnet_small")
# The repository's models take uint8 pixels, as optimize writes them by default.
SERVED = dataclasses.replace(SPEC, dtype="uint8")
# The layout and knobs optimize writes; a short batching window so small tests batch.
CONFIG = """\
name: "{name}"
backend: "onnxruntime"
max_batch_size: 32
input [{{ name: "input" data_type: TYPE_UINT8 dims: [1, 28, 28] }}]
output [{{ name: "logits" data_type: TYPE_FP32 dims: [10] }}]
dynamic_batching {{ preferred_batch_size: [8] max_queue_delay_microseconds: 1000 }}
instance_group [{{ kind: KIND_CPU count: 1 }}]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "1" }} }}
"""


def build_run_and_repo(root: Path, variants=("fp32", "int8")) -> tuple[Path, Path]:
    """runs/tiny (checkpoint, spec, optimize_report) and a repository of `variants`.

    Every variant is the same random resnet_small: the tests check plumbing, not speed.
    """
    import torch

    from contract.config import to_dict
    from optimize.export import take_pixels
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.models import create_model

    torch.manual_seed(0)
    net = create_model(SPEC.arch, SPEC.num_classes, SPEC.channels).eval()
    run = root / "runs" / MODEL
    run.mkdir(parents=True)
    config = to_dict(TrainConfig(name=MODEL))  # as train saves it: the data split comes from it
    save_checkpoint(
        run / "checkpoint.pt",
        {"arch": SPEC.arch, "state_dict": net.state_dict(), "config": config},
    )
    save_spec(SPEC, run / "model_spec.json")
    onnx = take_pixels(export_onnx(net, run / "model.onnx"), SERVED)
    repo = root / "model_repository"
    for v in variants:
        folder = repo / f"{MODEL}_{v}"
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.onnx").write_bytes(onnx.read_bytes())
        (folder / "config.pbtxt").write_text(CONFIG.format(name=folder.name))
        save_spec(SERVED, folder / "model_spec.json")
    report = {"best_cpu_variant": {"name": variants[-1]}}
    (run / "optimize_report.json").write_text(json.dumps(report))
    return run, repo


def add_raw_path(root: Path, run: Path, repo: Path, classifier: str = f"{MODEL}_int8") -> Path:
    """The ensemble `tiny` over `classifier`, and a pre-split image folder (PNGs of several
    sizes and modes) that the run's optimize report names: the raw path's test images."""
    import numpy as np
    from PIL import Image

    from serve.repository import add_preprocess_and_ensemble

    data = root / "images"
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 1), ("test", 2)):
        for c, label in enumerate(SPEC.labels):
            (data / split / label).mkdir(parents=True)
            for i in range(per_class):
                size = (28, 40, 64)[(c + i) % 3]
                mode = "L" if (c + i) % 2 else "RGB"
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).convert(mode).save(data / split / label / f"{i}.png")
    add_preprocess_and_ensemble(repo, SERVED, classifier, max_batch_size=32, instances=1)
    report = json.loads((run / "optimize_report.json").read_text())
    report["config"] = {"data": {"root": str(data)}}
    (run / "optimize_report.json").write_text(json.dumps(report))
    return data
