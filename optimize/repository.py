"""The Triton model repository: one model per deployed variant, swapped in atomically.

Layout per model: `config.pbtxt`, `labels.txt` (Triton's classification extension),
`model_spec.json` and `1/model.onnx`; ONNX models use `backend: "onnxruntime"`, so NVIDIA's
native backend and the project's Python backend of that name both serve them. The TensorRT
model `<name>_trt/` also carries `model_qdq.onnx`, the explicit-INT8 graph a GPU host turns
into `1/model.plan` (`python -m optimize.tensorrt`); until then it has no version folder.

Several runs share one repository (`default*` from `make demo`, `photo224*` from
`make demo-photo`): writing a run replaces that run's models and keeps every other one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from contract import ModelSpec, SpecError, load_spec, save_spec
from contract.atomic import staged_dir
from optimize.config import OptimizeError, RepositoryConfig
from optimize.evaluate import openvino_properties
from serve.repository import (
    RepositoryError,
    add_preprocess_and_ensemble,
    config_text,
    input_type,
    instance_groups,
)


@dataclass
class RepoModel:
    name: str  # Triton model name, e.g. default_pruned_int8
    source: Path  # model.onnx, or the QDQ ONNX for the TensorRT model
    tensorrt: bool = False
    plan: Path | None = None  # built TensorRT engine, when a GPU was present
    engine: str = "onnxruntime"  # or "openvino": the CPU backend that serves model.onnx


def model_config(model: RepoModel, spec: ModelSpec, cfg: RepositoryConfig) -> mc.ModelConfig:
    gpu = mc.ModelInstanceGroup.KIND_GPU
    cpu = mc.ModelInstanceGroup.KIND_CPU
    config = mc.ModelConfig(
        name=model.name,
        max_batch_size=cfg.max_batch_size,
        input=[{"name": spec.input_name, "data_type": input_type(spec),
                "dims": [spec.channels, spec.height, spec.width]}],
        output=[{"name": name, "data_type": mc.TYPE_FP32, "dims": [spec.num_classes],
                 "label_filename": "labels.txt"}
                for name in (spec.output_name, spec.probabilities_name)],
        dynamic_batching={"preferred_batch_size": cfg.preferred_batch_size,
                          "max_queue_delay_microseconds": cfg.max_queue_delay_microseconds},
        instance_group=instance_groups(cfg.instances, gpu if model.tensorrt else cpu),
    )  # fmt: skip
    if model.tensorrt:
        config.platform = "tensorrt_plan"
        return config
    return set_engine(config, model.engine, cfg)


def set_engine(config: mc.ModelConfig, engine: str, cfg: RepositoryConfig) -> mc.ModelConfig:
    """Point a CPU model's config at the backend of `engine`, with the parameters it reads
    (reliability moves a copied deployment between engines with this too)."""
    config.backend = engine
    config.ClearField("parameters")
    for key, value in backend_parameters(engine, cfg).items():
        config.parameters[key].string_value = value
    # The native OpenVINO backend's default is model.xml (IR); ONNX Runtime's is model.onnx.
    config.default_model_filename = "model.onnx" if engine == "openvino" else ""
    return config


def backend_parameters(engine: str, cfg: RepositoryConfig) -> dict[str, str]:
    """The parameters NVIDIA's native backend of that name reads (and ours, alike)."""
    if engine == "openvino":
        # NVIDIA's backend compiles a static batch of max_batch_size and, without padding,
        # refuses every execution holding fewer images (docs/serve.md).
        return {**openvino_properties(cfg.intra_op_threads), "ENABLE_BATCH_PADDING": "YES"}
    return {"intra_op_thread_count": str(cfg.intra_op_threads),
            "inter_op_thread_count": str(cfg.inter_op_threads)}  # fmt: skip


def write_model(root: Path, model: RepoModel, spec: ModelSpec, cfg: RepositoryConfig) -> None:
    folder = root / model.name
    folder.mkdir()
    (folder / "config.pbtxt").write_text(config_text(model_config(model, spec, cfg)))
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


def add_ensemble(root: Path, spec: ModelSpec, classifier: str, cfg: RepositoryConfig) -> list[str]:
    """The serve stage's preprocessing model + ensemble over `classifier`."""
    try:
        return add_preprocess_and_ensemble(
            root, spec, classifier, cfg.max_batch_size, cfg.preprocess_instances
        )
    except RepositoryError as e:  # a clear message, not a traceback
        raise OptimizeError(f"serve.repository: {e}") from None


def owner(folder: Path) -> str | None:
    """The run a model folder belongs to: the name in its model_spec.json (the ensemble has
    none: it is the folder named after the run), or None for a model we did not write."""
    try:
        return load_spec(folder / "model_spec.json").name
    except SpecError:
        return None


def others(path: Path, spec: ModelSpec) -> list[Path]:
    """Model folders in `path` that another run (or the operator) put there."""
    if not path.is_dir():
        return []
    return [
        folder
        for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folder.name != spec.name and owner(folder) != spec.name
    ]


def write_repository(
    path: Path,
    models: list[RepoModel],
    spec: ModelSpec,
    cfg: RepositoryConfig,
    ensemble_classifier: str | None,
) -> list[str]:
    """Build the whole repository beside `path` (this run's models new, the others copied);
    the old one stays until the swap."""
    kept = others(path, spec)
    with staged_dir(path) as tmp:
        for folder in kept:
            shutil.copytree(folder, tmp / folder.name, symlinks=True)
        for model in models:
            write_model(tmp, model, spec, cfg)
        names = [m.name for m in models]
        if ensemble_classifier is not None:
            names += add_ensemble(tmp, spec, ensemble_classifier, cfg)
    if kept:
        print(f"  kept the repository's other models: {', '.join(f.name for f in kept)}")
    return names
