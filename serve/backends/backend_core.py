"""The shared core of serve's Python-based backends (`onnxruntime/model.py`, `openvino/model.py`).

Each backend's model.py subclasses `BatchingModel` and only loads its engine; everything else is
here, once: reading the config's parameters as NVIDIA's native backend of that name reads
them, checking the config against the model file, refusing NaN and Inf, running the requests
of a dynamic batch as one engine run, and answering each request on its own (a refused
request gets its error, its batch mates are still served).

serve.install copies this one file beside each backend's model.py
(`.serve/backends/<engine>/backend_core.py`): the Python backend stub puts only the backend's
own folder on `sys.path`. The project imports the parsers too (`serve.local` runs a served
model in process as its config says), where no stub provides triton_python_backend_utils.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ModuleNotFoundError:  # imported by the project for the parsers, not by a stub
    pb_utils = None

# A loaded engine: the inputs by name -> the outputs in the config's order.
Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class BackendConfigError(ValueError):
    """A config parameter this backend cannot use; the model does not load."""


def parameters(config: dict) -> dict[str, str]:
    """The config's `parameters` as plain strings (Triton's JSON nests each in string_value)."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def int_parameter(config: dict, key: str, default: int) -> int:
    value = parameters(config).get(key, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise BackendConfigError(f"parameter '{key}' must be a non-negative number, got {value}")
    return int(value)


# --- ONNX Runtime: the keys NVIDIA's onnxruntime_backend reads ---------------------------------

# optimization.graph.level -> the name of ORT's GraphOptimizationLevel member
ORT_GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 0: "ORT_ENABLE_ALL", 1: "ORT_ENABLE_EXTENDED"}


def onnxruntime_settings(config: dict) -> dict:
    """Threads and graph optimisation level. Default 1 thread, not NVIDIA's all cores: on a
    shared CPU, scale with instance_group."""
    level = int(config.get("optimization", {}).get("graph", {}).get("level", 0))
    return {
        "intra_op_threads": int_parameter(config, "intra_op_thread_count", 1),
        "inter_op_threads": int_parameter(config, "inter_op_thread_count", 1),
        "graph_level": ORT_GRAPH_LEVELS.get(level, "ORT_ENABLE_ALL"),
    }


# --- OpenVINO: the keys NVIDIA's openvino_backend reads (src/openvino.cc, ParseParameters) -----

OPENVINO_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Native keys this stand-in refuses rather than ignore: a model relying on them would behave
# differently here without a word.
OPENVINO_UNSUPPORTED = ("RESHAPE_IO_LAYERS", "CPU_EXTENSION_PATH")


def _yes(params: dict[str, str], key: str) -> bool:
    return params.get(key, "").strip().lower() == "yes"  # as the native ParseBoolParameter


def _count(key: str, value: str) -> str:
    if not value.isdigit():
        raise BackendConfigError(
            f"expected the parameter '{key}' to be a non-negative number, got {value}"
        )
    return value


def openvino_properties(config: dict) -> dict[str, str]:
    """The OpenVINO properties the native backend would compile this model with.

    Only keys the config sets, with two exceptions: INFERENCE_NUM_THREADS defaults to 1 as in
    our onnxruntime backend (native: all cores), and threads are not pinned to cores. Each
    instance here is a stub process of its own, and OpenVINO pins each process's threads from
    the first core: two instances of one thread both ran on core 0 (docs/serve.md, "Threads
    not pinned", has the figures). NVIDIA's backend runs every
    instance in one process and has no parameter for it. No precision is forced: OpenVINO's
    default applies (bf16 on CPUs with AVX512_BF16, such as this machine's) unless HINT_BF16
    is YES, exactly as natively.
    """
    params = {k: v.strip().lower() for k, v in parameters(config).items()}
    props = {"INFERENCE_NUM_THREADS": "1", "ENABLE_CPU_PINNING": "NO"}
    for key in ("INFERENCE_NUM_THREADS", "COMPILATION_NUM_THREADS"):
        if params.get(key):
            props[key] = _count(key, params[key])
    if params.get("HINT_BF16"):
        if params["HINT_BF16"] != "yes":
            raise BackendConfigError(
                f"expected the parameter 'HINT_BF16' to be YES, got {params['HINT_BF16']}"
            )
        props["INFERENCE_PRECISION_HINT"] = "bf16"
    streams = params.get("NUM_STREAMS")
    if streams:
        if streams not in ("auto", "numa") and not streams.isdigit():
            raise BackendConfigError(
                f"expected the parameter 'NUM_STREAMS' to be either AUTO/NUMA/<int_value>, "
                f"got {streams}"
            )
        props["NUM_STREAMS"] = streams.upper()
    hint = params.get("PERFORMANCE_HINT")
    if hint:
        if hint.upper() not in OPENVINO_HINTS:
            raise BackendConfigError(
                "expected the parameter 'PERFORMANCE_HINT' to be "
                f"LATENCY/THROUGHPUT/CUMULATIVE_THROUGHPUT, got {hint}"
            )
        props["PERFORMANCE_HINT"] = hint.upper()
    # The native backend allows auto-batching for batching models unless told not to.
    batching = int(config.get("max_batch_size", 0)) > 0
    auto = batching and not _yes(params, "SKIP_OV_DYNAMIC_BATCHSIZE")
    props["ALLOW_AUTO_BATCHING"] = "YES" if auto else "NO"
    return props


def openvino_checks(config: dict) -> bool:
    """Refuse what this stand-in does not do; return whether ENABLE_BATCH_PADDING is YES."""
    params = parameters(config)
    for key in OPENVINO_UNSUPPORTED:
        if params.get(key, "").strip():
            raise BackendConfigError(
                f"parameter '{key}' is not supported by serve's Python-based openvino backend "
                "(NVIDIA's native backend reads it)"
            )
    device = params.get("TARGET_DEVICE", "").strip().upper() or "CPU"
    if device != "CPU":
        raise BackendConfigError(f"TARGET_DEVICE '{device}': this backend runs on the CPU only")
    return _yes(params, "ENABLE_BATCH_PADDING")


def padding_error(max_batch: int, total: int) -> str:
    """The native backend's answer to a batch it cannot run: its model is compiled for a
    static batch of max_batch_size (ov::set_batch) and pads only with ENABLE_BATCH_PADDING."""
    return (
        f"expected requests with batch size '{max_batch}', got '{total}'... this error can be "
        "avoided by setting 'ENABLE_BATCH_PADDING' parameter in model configuration to 'YES' "
        "at a performance cost."
    )


# OpenVINO's CPU plugin runs a model with a dynamic batch axis ~7% slower than one compiled for
# the batch at hand, and ~15% slower still when the size changes from call to call, as it does
# under dynamic batching (docs/serve.md, "One compiled model per batch size", has the figures).
# Models compiled per batch size cost memory (EfficientNet-Lite0 int8: ~17 MB a model and
# ~3.6 MB an image of its batch; all 32 sizes took 2.3 GB), so the static models of a process
# hold at most this many images in all (sizes 1 to 10, ~370 MB); other sizes run dynamic.
STATIC_IMAGES = 64


class OpenVINOBatches:
    """An OpenVINO model run on a copy compiled for the batch size of each call.

    `infer(feed)` takes the inputs by name or index (first axis the batch). A size without a
    static copy gets one compiled first if it fits in `budget` images, else runs on the model
    with the dynamic batch axis. Static and dynamic copies gave bit-identical outputs for
    every model served here (tests/serve/test_serve_backend_core.py); they differ where ONNX
    leaves the result undefined (an out-of-range float -> int8 Cast saturates on the dynamic
    model, wraps on a static copy).
    """

    def __init__(self, core, model, properties: dict, budget: int):
        self.core, self.model, self.properties, self.budget = core, model, properties, budget
        self.dynamic = core.compile_model(model, "CPU", properties)
        self.static: dict = {}  # batch size -> the copy compiled for it
        self._compiling = threading.Lock()
        self._local = threading.local()

    @property
    def requests(self) -> dict:
        """Compiled model -> the calling thread's infer request on it: compiled models are
        thread-safe, infer requests are not (the FastAPI baseline calls from a threadpool)."""
        return self._local.__dict__.setdefault("requests", {})

    def compile_upfront(self, max_batch: int) -> None:
        """Static copies for batch sizes 1, 2, 3, ... up to max_batch while the budget lasts:
        small batches are the ones a dynamic batcher forms most. A size left out never fits
        later, so `infer` will not compile while a request waits."""
        for n in range(1, max_batch + 1):
            if self.compiled_for(n) is self.dynamic:
                return

    def compiled_for(self, n: int):
        """The copy compiled for batch size n (compiled now if it fits the budget), else the
        dynamic model."""
        with self._compiling:
            if n not in self.static and sum(self.static) + n <= self.budget:
                self.static[n] = self._compile(n)
            return self.static.get(n, self.dynamic)

    def infer(self, feed: dict):
        compiled = self.compiled_for(len(next(iter(feed.values()))))
        requests = self.requests
        if compiled not in requests:
            requests[compiled] = compiled.create_infer_request()
        return requests[compiled].infer(feed, share_inputs=True)  # outputs are copies

    def _compile(self, n: int):
        model = self.model.clone()
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            shape[0] = n
            shapes[port] = shape
        model.reshape(shapes)
        return self.core.compile_model(model, "CPU", self.properties)


# --- The Triton side ---------------------------------------------------------------------------


def mismatches(config: dict, model: dict[str, np.dtype | None]) -> list[str]:
    """Config inputs and outputs that the model lacks or types differently (None: unknown)."""
    problems = []
    for cfg in [*config["input"], *config["output"]]:
        name, data_type = cfg["name"], cfg["data_type"]
        if name not in model:
            problems.append(f"'{name}' is not in the model, which has {sorted(model)}")
            continue
        have = model[name]
        if have is not None and np.dtype(have) != pb_utils.triton_string_to_numpy(data_type):
            problems.append(f"'{name}' is {data_type} in the config, {have} in the model")
    return problems


class BatchingModel:
    """The TritonPythonModel of a Python-based backend, less the engine.

    A subclass sets `engine` (the word its errors start with) and `default_filename` (the
    native backend's), and defines `load(path, config) -> (run, {tensor name: numpy dtype})`.
    Hot path: the requests of a dynamic batch become one engine run; inputs are read zero-copy
    (`as_numpy`), a lone request runs without concatenation, nothing is logged per request.
    Triton checks names, types and shapes before a request gets here; NaN and Inf are refused
    here (NVIDIA's native backends pass them through: docs/serve.md).
    """

    engine = ""
    default_filename = "model.onnx"

    def load(self, path: Path, config: dict) -> tuple[Run, dict[str, np.dtype | None]]:
        raise NotImplementedError

    def batch_error(self, total: int) -> str | None:
        """Why an execution of `total` images cannot run at all (every request gets it)."""
        return None

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        name = args["model_name"]
        filename = config.get("default_model_filename") or self.default_filename
        path = Path(args["model_repository"]) / args["model_version"] / filename
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{name}: {path} not found")
        self.max_batch = int(config.get("max_batch_size", 0))
        self.input_names = [c["name"] for c in config["input"]]
        try:
            self.run, model_types = self.load(path, config)
        except BackendConfigError as e:
            raise pb_utils.TritonModelException(f"{name}: {e}") from None
        problems = mismatches(config, model_types)
        if problems:
            raise pb_utils.TritonModelException(
                f"{name}: {filename} vs config: {'; '.join(problems)}"
            )
        self.output_names = [c["name"] for c in config["output"]]

    def _feed(self, request) -> dict[str, np.ndarray] | str:
        """The request's inputs by name, or a one-line reason why they are unusable.

        Triton's core has already refused missing or unknown inputs, other data types, shapes
        and batch sizes than the config's (tests/serve/test_serve_e2e.py sends each).
        """
        feed = {}
        for name in self.input_names:
            array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            # NaN/Inf would come back as NaN scores, or as confident answers after INT8.
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return f"input '{name}' holds NaN or Inf values"
            feed[name] = array
        return feed

    def _respond(self, outputs: list[np.ndarray]):
        tensors = [pb_utils.Tensor(n, o) for n, o in zip(self.output_names, outputs, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_one(self, feed: dict[str, np.ndarray]):
        try:
            return self._respond(self.run(feed))
        except Exception as e:  # the engine's errors per request, never a crash of the batch
            return error(f"{self.engine}: {e}", internal=True)

    def _run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray] | None:
        """One engine run over all feeds, or None if they cannot run as one batch."""
        try:
            return self.run({n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]})
        except Exception:  # e.g. differing variable dims, or one request the engine rejects
            return None

    def _batch_size(self, request) -> int:
        name = self.input_names[0]
        return len(pb_utils.get_input_tensor_by_name(request, name).as_numpy())

    def execute(self, requests: list) -> list:
        if self.max_batch:
            refused = self.batch_error(sum(self._batch_size(r) for r in requests))
            if refused:
                return [error(refused, internal=True) for _ in requests]
        feeds = [self._feed(r) for r in requests]
        good = [i for i, f in enumerate(feeds) if not isinstance(f, str)]
        responses = [error(f) if isinstance(f, str) else None for f in feeds]
        batched = len(good) > 1 and self.max_batch
        outputs = self._run_batch([feeds[i] for i in good]) if batched else None
        if outputs is None:
            for i in good:
                responses[i] = self._run_one(feeds[i])
            return responses
        start = 0
        for i in good:
            size = len(next(iter(feeds[i].values())))
            responses[i] = self._respond([o[start : start + size] for o in outputs])
            start += size
        return responses


def error(message: str, internal: bool = False):
    # pb_utils gets TritonError from the stub at run time, not at import: look it up here.
    kind = pb_utils.TritonError
    return pb_utils.InferenceResponse(
        error=kind(message, kind.INTERNAL if internal else kind.INVALID_ARG)
    )
