"""Write Triton model configs: server-side preprocessing plus an ensemble over the classifier.

Configs are built as tritonclient's ModelConfig protobuf and printed with text_format, so each
config.pbtxt parses exactly as Triton will parse it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import contract
from contract import ModelSpec, save_spec
from contract.atomic import staged_dir
from contract.spec import DTYPES

PREPROCESS_MODEL_PY = Path(__file__).parent / "preprocess_model" / "model.py"
IMAGE_INPUT = "image"
PREPROCESSED = "preprocessed"  # the ensemble's tensor between the two steps


class RepositoryError(ValueError):
    """A repository or model config that cannot be used as asked."""


def read_config(path: str | Path) -> mc.ModelConfig:
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except FileNotFoundError:
        raise RepositoryError(f"{path} not found") from None
    except text_format.ParseError as e:
        raise RepositoryError(f"{path} is not a valid model config: {e}") from None


def chw(spec: ModelSpec) -> tuple[int, int, int]:
    """The model input's per-image shape: channels, height, width."""
    return (spec.channels, spec.height, spec.width)


def input_type(spec: ModelSpec) -> int:
    """The config data type of the classifier's input: TYPE_FP32 or TYPE_UINT8 (spec.dtype)."""
    return mc.DataType.Value(f"TYPE_{DTYPES[spec.dtype]}")


def config_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


# Rate-limiter priorities (lower runs first): the first instance, then the others.
FIRST_INSTANCE_PRIORITY, OTHER_INSTANCES_PRIORITY = 1, 1000


def instance_groups(count: int, kind: int = mc.ModelInstanceGroup.KIND_CPU) -> list:
    """`count` instances as Triton instance groups: the first one preferred while it is free.

    Without this, Triton hands the executions of a lightly loaded model to its instances in
    turn, and each runs cold: another process's weights and buffers took the caches in
    between (photo224 at one request at a time: p50 3.3-3.5 ms in turn, 2.8-2.9 on one
    instance; docs/serve.md, "A warm instance first"). With tritonserver's
    --rate-limit=execution_count (serve.server and docker/entrypoint.sh pass it), an execution
    goes to the free instance with the lowest executions x priority: the first instance
    takes lone requests, the others join as soon as it is busy. A server without the flag
    ignores the priorities.
    """

    def group(n: int, priority: int) -> mc.ModelInstanceGroup:
        limiter = mc.ModelRateLimiter(priority=priority)
        return mc.ModelInstanceGroup(count=n, kind=kind, rate_limiter=limiter)

    first = [group(1, FIRST_INSTANCE_PRIORITY)]
    return first + ([group(count - 1, OTHER_INSTANCES_PRIORITY)] if count > 1 else [])


def _tensor(name: str, data_type: int, dims) -> dict:
    return {"name": name, "data_type": data_type, "dims": list(dims)}


def _dims_match(config_dims, wanted) -> bool:
    return len(config_dims) == len(wanted) and all(
        c in (-1, w) for c, w in zip(config_dims, wanted, strict=True)
    )


def _classifier_outputs(repo_dir: Path, classifier: str, spec: ModelSpec, max_batch: int):
    """The classifier's score outputs (logits, and probabilities where it has them), once its
    config is known to fit the spec and batch."""
    path = repo_dir / classifier / "config.pbtxt"
    config = read_config(path)
    inputs = {i.name: i for i in config.input}
    outputs = {o.name: o for o in config.output}
    shape = chw(spec)
    problem = None
    if config.max_batch_size < max_batch:
        problem = f"max_batch_size {config.max_batch_size} < the ensemble's {max_batch}"
    elif spec.input_name not in inputs or spec.output_name not in outputs:
        problem = f"needs input '{spec.input_name}' and output '{spec.output_name}'"
    elif inputs[spec.input_name].data_type != input_type(spec):
        wanted = mc.DataType.Name(input_type(spec))
        problem = f"input '{spec.input_name}' must be {wanted} (the spec's dtype {spec.dtype})"
    elif not _dims_match(inputs[spec.input_name].dims, shape):
        problem = f"input '{spec.input_name}' dims must be {list(shape)}"
    if problem:
        raise RepositoryError(f"{path}: {problem}")
    names = (spec.output_name, spec.probabilities_name)
    return [outputs[name] for name in names if name in outputs]


def _write_preprocess(
    model_dir: Path, name: str, spec: ModelSpec, max_batch: int, instances: int
) -> None:
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=max_batch,
        input=[_tensor(IMAGE_INPUT, mc.TYPE_STRING, [1])],
        output=[_tensor(spec.input_name, input_type(spec), chw(spec))],
        dynamic_batching={},
        instance_group=instance_groups(instances),
    )
    (model_dir / "config.pbtxt").write_text(config_text(config))
    save_spec(spec, model_dir / "model_spec.json")
    version = model_dir / "1"
    version.mkdir()
    shutil.copy2(PREPROCESS_MODEL_PY, version / "model.py")
    shutil.copytree(
        Path(contract.__file__).parent,
        version / "contract",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def _write_ensemble(
    model_dir: Path, spec: ModelSpec, steps: tuple[str, str], outputs: list, max_batch: int
) -> None:
    preprocess, classifier = steps
    config = mc.ModelConfig(
        name=spec.name,
        platform="ensemble",
        max_batch_size=max_batch,
        input=[_tensor(IMAGE_INPUT, mc.TYPE_STRING, [1])],
        output=[
            {**_tensor(o.name, o.data_type, o.dims), "label_filename": "labels.txt"}
            for o in outputs
        ],
        ensemble_scheduling={
            "step": [
                {
                    "model_name": preprocess,
                    "model_version": -1,
                    "input_map": {IMAGE_INPUT: IMAGE_INPUT},
                    "output_map": {spec.input_name: PREPROCESSED},
                },
                {
                    "model_name": classifier,
                    "model_version": -1,
                    "input_map": {spec.input_name: PREPROCESSED},
                    "output_map": {o.name: o.name for o in outputs},
                },
            ]
        },
    )
    (model_dir / "config.pbtxt").write_text(config_text(config))
    (model_dir / "labels.txt").write_text("".join(f"{label}\n" for label in spec.labels))
    (model_dir / "1").mkdir()  # Triton wants a version directory, even an empty one


def add_preprocess_and_ensemble(
    repo_dir: Path, spec: ModelSpec, classifier: str, max_batch_size: int, instances: int = 1
) -> list[str]:
    """Add `<spec.name>_preprocess` and the ensemble `<spec.name>` (image bytes -> logits).

    `classifier` must already be in `repo_dir` with a config that fits `spec`; `instances`
    preprocessing stubs decode in parallel (each is a process: no GIL between them). Each model
    directory is replaced whole, so a crash leaves the old one or the new one, never a mix.
    Returns the names of the models written.
    """
    repo_dir = Path(repo_dir)
    spec.validate()
    preprocess = f"{spec.name}_preprocess"
    if not repo_dir.is_dir():
        raise RepositoryError(f"model repository {repo_dir} does not exist")
    if classifier in (spec.name, preprocess):
        raise RepositoryError(f"classifier '{classifier}' would be overwritten: rename it")
    if max_batch_size < 1:
        raise RepositoryError("max_batch_size must be >= 1 (the ensemble batches images)")
    if any("\n" in label for label in spec.labels):
        raise RepositoryError("labels must not contain newlines (labels.txt is one a line)")
    outputs = _classifier_outputs(repo_dir, classifier, spec, max_batch_size)
    with staged_dir(repo_dir / preprocess) as tmp:
        _write_preprocess(tmp, preprocess, spec, max_batch_size, instances)
    with staged_dir(repo_dir / spec.name) as tmp:
        _write_ensemble(tmp, spec, (preprocess, classifier), outputs, max_batch_size)
    return [preprocess, spec.name]
