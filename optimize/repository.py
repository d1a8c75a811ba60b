"""The Triton model repository: one model per deployed variant, swapped in atomically.

Layout per model: `config.pbtxt`, `labels.txt` (Triton's classification extension),
`model_spec.json` and `1/model.onnx`; ONNX models use `backend: "onnxruntime"`, so NVIDIA's
native backend and the project's Python backend of that name both serve them. The TensorRT
model `<name>_trt/` also carries `model_qdq.onnx`, the explicit-INT8 graph a GPU host turns
into `1/model.plan` (`python -m optimize.tensorrt`); until then it has no version folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from contract import ModelSpec, save_spec
from contract.atomic import staged_dir
from optimize.config import OptimizeError, RepositoryConfig
from serve.repository import RepositoryError, add_preprocess_and_ensemble


@dataclass
class RepoModel:
    name: str  # Triton model name, e.g. default_pruned_int8
    source: Path  # model.onnx, or the QDQ ONNX for the TensorRT model
    tensorrt: bool = False
    plan: Path | None = None  # built TensorRT engine, when a GPU was present


def config_pbtxt(model: RepoModel, spec: ModelSpec, cfg: RepositoryConfig) -> str:
    dims = ", ".join(str(d) for d in (spec.channels, spec.height, spec.width))
    preferred = (
        f"  preferred_batch_size: [ {', '.join(str(b) for b in cfg.preferred_batch_size)} ]\n"
        if cfg.preferred_batch_size
        else ""
    )
    if model.tensorrt:
        runtime, kind, params = 'platform: "tensorrt_plan"', "KIND_GPU", ""
    else:
        runtime, kind = 'backend: "onnxruntime"', "KIND_CPU"
        params = "".join(
            f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
            for key, value in (
                ("intra_op_thread_count", cfg.intra_op_threads),
                ("inter_op_thread_count", cfg.inter_op_threads),
            )
        )
    return f"""name: "{model.name}"
{runtime}
max_batch_size: {cfg.max_batch_size}
input [
  {{
    name: "{spec.input_name}"
    data_type: TYPE_FP32
    dims: [ {dims} ]
  }}
]
output [
  {{
    name: "{spec.output_name}"
    data_type: TYPE_FP32
    dims: [ {spec.num_classes} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
{preferred}  max_queue_delay_microseconds: {cfg.max_queue_delay_microseconds}
}}
instance_group [
  {{
    count: {cfg.instances}
    kind: {kind}
  }}
]
{params}"""


def write_model(root: Path, model: RepoModel, spec: ModelSpec, cfg: RepositoryConfig) -> None:
    folder = root / model.name
    folder.mkdir()
    (folder / "config.pbtxt").write_text(config_pbtxt(model, spec, cfg))
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in spec.labels))
    save_spec(spec, folder / "model_spec.json")
    if model.tensorrt:
        shutil.copyfile(model.source, folder / "model_qdq.onnx")
        if model.plan is not None:
            (folder / "1").mkdir()
            shutil.copyfile(model.plan, folder / "1" / "model.plan")
    else:
        (folder / "1").mkdir()
        shutil.copyfile(model.source, folder / "1" / "model.onnx")


def add_ensemble(root: Path, spec: ModelSpec, classifier: str, max_batch_size: int) -> list[str]:
    """The serve stage's preprocessing model + ensemble over `classifier`."""
    try:
        return add_preprocess_and_ensemble(root, spec, classifier, max_batch_size)
    except RepositoryError as e:  # a clear message, not a traceback
        raise OptimizeError(f"serve.repository: {e}") from None


def write_repository(
    path: Path,
    models: list[RepoModel],
    spec: ModelSpec,
    cfg: RepositoryConfig,
    ensemble_classifier: str | None,
) -> list[str]:
    """Build the whole repository beside `path`; the old one stays until the swap."""
    with staged_dir(path) as tmp:
        for model in models:
            write_model(tmp, model, spec, cfg)
        names = [m.name for m in models]
        if ensemble_classifier is not None:
            names += add_ensemble(tmp, spec, ensemble_classifier, cfg.max_batch_size)
    return names
