"""The deployed variants of a model repository, and serving-config variations of them.

Variations are loaded with Triton's load API and a config override (nothing is written);
only `--apply` writes a winning config.pbtxt back, atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from contract import ModelSpec, load_spec
from contract.atomic import atomic_write_text
from serve.repository import config_text, instance_groups, read_config

VARIANTS = ("fp32", "int8", "pruned", "pruned_int8")  # what optimize deploys for CPU
# The parameter that holds a model instance's threads, per backend (NVIDIA's native backends
# and ours read the same names); the engine a variant runs on is its config's backend.
THREADS_PARAMETER = {"onnxruntime": "intra_op_thread_count", "openvino": "INFERENCE_NUM_THREADS"}


class BenchRepoError(ValueError):
    pass


@dataclass
class Variant:
    name: str  # fp32, int8, ...
    model: str  # Triton model name, e.g. default_int8
    onnx: Path
    config: mc.ModelConfig

    @property
    def engine(self) -> str:
        """The CPU engine serving it (onnxruntime, openvino): in-process baselines use it too."""
        return engine(self.config)


@dataclass
class Ensemble:
    """The ensemble `<model>` (encoded image bytes in) and the two models it chains."""

    name: str
    input_name: str  # BYTES, one encoded image per batch item
    outputs: list[str]  # logits, probabilities
    max_batch_size: int
    preprocess: str  # <model>_preprocess, a Python model running contract.preprocess
    preprocess_config: mc.ModelConfig
    classifier: str  # the deployed classifier it feeds, e.g. default_pruned_int8


def engine(config: mc.ModelConfig) -> str:
    return config.backend or "onnxruntime"


def families(repo: Path) -> list[str]:
    return sorted(p.parent.name.removesuffix("_fp32") for p in repo.glob("*_fp32/config.pbtxt"))


def discover(repo: Path, model: str | None) -> tuple[str, ModelSpec, list[Variant]]:
    """(model name, its spec, its deployed CPU variants found in `repo`)."""
    if not repo.is_dir():
        raise BenchRepoError(f"model repository {repo} does not exist: run `make optimize`")
    found = families(repo)
    if model is None:
        if not found:
            raise BenchRepoError(f"no model variants (<name>_fp32/) in {repo}: run `make optimize`")
        if len(found) != 1:
            raise BenchRepoError(
                f"{repo} holds {len(found)} models ({', '.join(found) or 'no <name>_fp32'}): "
                "pick one with --model"
            )
        model = found[0]
    variants = []
    for name in VARIANTS:
        folder = repo / f"{model}_{name}"
        if not (folder / "config.pbtxt").is_file():
            continue
        config = read_config(folder / "config.pbtxt")
        # The file its backend loads: model.onnx for ONNX Runtime, and for OpenVINO as optimize
        # writes it (default_model_filename).
        onnx = folder / "1" / (config.default_model_filename or "model.onnx")
        if onnx.is_file():
            variants.append(Variant(name, folder.name, onnx, config))
    if not variants:
        raise BenchRepoError(
            f"no variants of {model!r} in {repo} (looked for {model}_{{{','.join(VARIANTS)}}}"
            f"/1/model.onnx; models there: {', '.join(found) or 'none'})"
        )
    spec_file = next(
        (f for v in variants if (f := v.onnx.parent.parent / "model_spec.json").is_file()), None
    )
    if spec_file is None:
        raise BenchRepoError(f"no model_spec.json beside the {model} variants in {repo}")
    return model, load_spec(spec_file), variants


def find_ensemble(repo: Path, model: str) -> Ensemble | None:
    """The ensemble named `model` in `repo` with its two steps, or None if there is none."""
    folder = repo / model
    if not (folder / "config.pbtxt").is_file():
        return None
    config = read_config(folder / "config.pbtxt")
    steps = [s.model_name for s in config.ensemble_scheduling.step]
    if config.platform != "ensemble" or len(steps) != 2 or len(config.input) != 1:
        raise BenchRepoError(
            f"{folder}: expected an ensemble of two steps (preprocess, classifier) taking one "
            "input: bench measures the raw path through it"
        )
    if config.input[0].data_type != mc.TYPE_STRING:
        raise BenchRepoError(f"{folder}: its input '{config.input[0].name}' is not TYPE_STRING")
    preprocess, classifier = steps
    if not (repo / preprocess / "config.pbtxt").is_file():
        raise BenchRepoError(f"{folder}: its first step {preprocess} is not in {repo}")
    return Ensemble(
        name=model,
        input_name=config.input[0].name,
        outputs=[o.name for o in config.output],
        max_batch_size=config.max_batch_size,
        preprocess=preprocess,
        preprocess_config=read_config(repo / preprocess / "config.pbtxt"),
        classifier=classifier,
    )


def _parameter(config: mc.ModelConfig, name: str) -> int:
    # `in` first: indexing a protobuf map adds the key, and the config would change on reading
    return int(config.parameters[name].string_value or 1) if name in config.parameters else 1


def _threads(config: mc.ModelConfig) -> int:
    return _parameter(config, THREADS_PARAMETER.get(engine(config), "intra_op_thread_count"))


def serving(config: mc.ModelConfig) -> dict:
    """The serving knobs of a config, as the report states them."""
    has_batching = config.HasField("dynamic_batching")
    return {
        "instances": sum(g.count or 1 for g in config.instance_group) or 1,
        "intra_op_threads": _threads(config),
        "inter_op_threads": _parameter(config, "inter_op_thread_count"),
        "dynamic_batching": has_batching,
        "max_queue_delay_us": (
            config.dynamic_batching.max_queue_delay_microseconds if has_batching else None
        ),
        "preferred_batch_size": (
            list(config.dynamic_batching.preferred_batch_size) if has_batching else None
        ),
        "max_batch_size": config.max_batch_size,
        "engine": engine(config),
        "streams": _parameter(config, "NUM_STREAMS") if engine(config) == "openvino" else None,
    }


def variation(
    config: mc.ModelConfig,
    *,
    dynamic_batching: bool = True,
    instances: int | None = None,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    preferred_batch_size: list[int] | None = None,
    intra_op_threads: int | None = None,
    streams: int | None = None,
) -> mc.ModelConfig:
    """A copy of `config` with the given serving knobs changed (None: unchanged). `streams`
    (OpenVINO's NUM_STREAMS per instance) leaves an ONNX Runtime config as it is."""
    out = mc.ModelConfig()
    out.CopyFrom(config)
    if max_batch_size is not None:
        out.max_batch_size = max_batch_size
    if out.HasField("dynamic_batching") and preferred_batch_size is None:
        preferred_batch_size = list(out.dynamic_batching.preferred_batch_size)
    if not dynamic_batching:
        out.ClearField("dynamic_batching")
    else:
        if max_queue_delay_us is not None:
            out.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
        if preferred_batch_size is not None:
            # A preferred size at max batch is what the batcher does anyway: dropped too.
            sizes = [b for b in preferred_batch_size if b < out.max_batch_size]
            del out.dynamic_batching.preferred_batch_size[:]
            out.dynamic_batching.preferred_batch_size.extend(sizes)
    if instances is not None:
        del out.instance_group[:]
        out.instance_group.extend(instance_groups(instances))
    if intra_op_threads is not None:
        name = THREADS_PARAMETER.get(engine(out), "intra_op_thread_count")
        out.parameters[name].string_value = str(intra_op_threads)
    if streams is not None and engine(out) == "openvino":
        out.parameters["NUM_STREAMS"].string_value = str(streams)
    return out


def on_engine(config: mc.ModelConfig, engine_name: str) -> mc.ModelConfig:
    """A copy of `config` served by `engine_name`'s backend with the same instances, threads
    per instance and batching: the same artifact on the other CPU engine, with the parameters
    optimize writes for that engine."""
    from optimize.config import RepositoryConfig
    from optimize.repository import set_engine

    knobs = serving(config)
    out = mc.ModelConfig()
    out.CopyFrom(config)
    cfg = RepositoryConfig(
        intra_op_threads=knobs["intra_op_threads"], inter_op_threads=knobs["inter_op_threads"]
    )
    return set_engine(out, engine_name, cfg)


def to_json(config: mc.ModelConfig) -> str:
    """The form Triton's load API takes as a config override."""
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def write_config(repo: Path, model: str, config: mc.ModelConfig) -> Path:
    path = repo / model / "config.pbtxt"
    atomic_write_text(path, config_text(config))
    read_config(path)  # what we wrote must parse as Triton will parse it
    return path


def accepted(
    batches: list[int], max_batch_size: int, log: Callable[[str], None] | None = None
) -> list[int]:
    """The batch sizes a model with this max_batch_size accepts (Triton refuses the rest);
    with `log`, says which were left out."""
    above = [b for b in batches if b > max_batch_size]
    if above and log:
        log(f"  note: batch sizes {above} exceed max_batch_size {max_batch_size}: left out")
    return [b for b in batches if b <= max_batch_size]
