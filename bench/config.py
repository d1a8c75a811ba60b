"""Typed bench settings: defaults < configs/bench.yaml < --quick < CLI flags and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.config import ConfigError, load_config

SECTIONS = (
    "inprocess",  # pytest-benchmark: eager FP32 and every ONNX variant, batch sizes x threads
    "sweep",  # closed-loop concurrency sweep of the primary variant, HTTP and gRPC, and
    # HTTP requests of several images
    "raw",  # the path users call: encoded test images to the ensemble, HTTP and gRPC, single
    # images and client batches, beside the tensor path on the same classifier
    "openloop",  # Poisson arrivals at fractions of the best closed-loop throughput
    "variants",  # every deployed variant at a few concurrencies
    "dynbatch",  # dynamic batching on vs off, same model and load
    "fastapi",  # a FastAPI + ONNX Runtime server on the same artifact
    "perf_analyzer",  # NVIDIA's perf_analyzer at the comparison point and the best point
    "engines",  # the primary artifact on ONNX Runtime and on OpenVINO, same instances/threads
    "search",  # serving config search
    "analyzer",  # our search's winner vs Model Analyzer's (make model-analyzer), same load
    "replicas",  # 1 and N tritonserver replicas on the same cores, requests spread over them
    "paired",  # the headline ratios again, both sides back to back in alternating rounds
)

# --quick: every section, each as short as still says something; < 3 minutes on 2 cores.
QUICK = (
    "windows.warmup_s=0.3",
    "windows.window_s=0.5",
    "windows.max_s=3.0",
    "noise.retries=1",
    "inprocess.threads=[1]",
    "inprocess.min_rounds=5",
    "inprocess.max_time_s=0.15",
    "inprocess.warmup_iterations=3",
    "inprocess.processes_s=1.0",
    "served.concurrency=[1,4,16]",
    "served.grpc_concurrency=[1,16]",
    "served.variant_concurrency=[1,16]",
    "served.client_batches=[32]",
    "served.batch_concurrency=[2]",
    "served.rates=[0.5]",
    "raw.images=32",
    "raw.check_images=8",
    "raw.concurrency=[1,16]",
    "raw.grpc_concurrency=[16]",
    "raw.client_batches=[32]",
    "raw.batch_concurrency=[2]",
    "raw.pipeline_s=1.0",
    "replicas.concurrency=[16]",
    "perf_analyzer.measurement_ms=500",
    "perf_analyzer.max_trials=6",
    "search.instances=[1,2]",
    "search.max_queue_delay_us=[0]",
    "search.preferred_batch_sizes=[[],[8]]",
    "search.threads=[1]",
    "search.streams=[1]",
    "search.preprocess_instances=[1,2]",
    "search.concurrency=[16]",
    "analyzer.concurrency=[16]",
    "analyzer.rounds=1",
    "engines.rounds=1",
    "paired.rounds=2",
)


@dataclass
class WindowConfig:
    """perf_analyzer's rule: windows until the last `windows` agree within `stability`."""

    warmup_s: float = 2.0
    window_s: float = 2.0
    stability: float = 0.10  # max/min of throughput and of mean latency, minus 1
    windows: int = 3
    max_s: float = 30.0  # cap per point, warm-up excluded; then the point is marked unstable
    max_requests: int = 2_000_000  # hard bound on requests per point


@dataclass
class NoiseConfig:
    busy_cores: float = 0.25  # other processes' CPU (in cores) above which a point is redone
    retries: int = 2  # extra attempts for a busy point; the quietest attempt is kept


@dataclass
class InprocessConfig:
    # Sizes above the deployed models' max_batch_size are left out (no request carries them)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    threads: list[int] = field(default_factory=lambda: [1, 2])  # ORT intra-op / torch threads
    eager: bool = True  # PyTorch eager FP32 from runs/<name>/checkpoint.pt
    eager_threads: int = 0  # 0: torch's default (all cores), what a naive inference.py gets
    min_rounds: int = 20
    max_time_s: float = 1.0
    warmup_iterations: int = 10
    processes_s: float = 3.0  # the primary in the deployed instances x threads: seconds


@dataclass
class ServedConfig:
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    grpc_concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    variant_concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    # Requests carrying several images (a page of checkboxes, a video's frames): the sweep
    # adds HTTP points for each size the model accepts at these concurrencies. []: single
    # images only.
    client_batches: list[int] = field(default_factory=lambda: [8, 32, 128])
    batch_concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    rates: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9])
    compare_concurrency: int = 16  # dynbatch on/off, Triton vs FastAPI, perf_analyzer
    max_inflight: int = 512  # open loop: arrivals beyond this many in flight are dropped
    seed: int = 0
    ready_timeout_s: float = 120.0


@dataclass
class RawConfig:
    """The raw path: encoded images from the run's test split, sent to the ensemble `<model>`."""

    data: str | None = None  # image folder; None: the run's test split (as client/verify.py)
    images: int = 64  # distinct test images the requests cycle through (a fixed random pick)
    check_images: int = 16  # answered through the ensemble and in-process, compared, first
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    grpc_concurrency: list[int] = field(default_factory=lambda: [1, 16, 32])
    client_batches: list[int] = field(default_factory=lambda: [8, 32, 128])  # images a request
    batch_concurrency: list[int] = field(default_factory=lambda: [1, 2, 4])
    pipeline_s: float = 3.0  # in-process preprocess + model pipeline: seconds per shape


@dataclass
class ReplicasConfig:
    """N tritonservers on these same cores, the load generator spreading requests over them."""

    counts: list[int] = field(default_factory=lambda: [1, 2])
    concurrency: list[int] = field(default_factory=lambda: [16, 32])


@dataclass
class FastAPIShape:
    workers: int = 1  # uvicorn worker processes
    threads: int = 1  # ORT intra-op threads in each


@dataclass
class FastAPIConfig:
    # []: Triton's own total (instances x ORT threads of the primary variant as deployed), as
    # N workers x 1 thread and as 1 worker x N threads; the best is compared.
    shapes: list[FastAPIShape] = field(default_factory=list)


@dataclass
class PerfAnalyzerConfig:
    binary: str = ".venv/tools/bin/perf_analyzer"
    measurement_ms: int = 2000
    max_trials: int = 10
    stability_percentage: int = 10


@dataclass
class SearchConfig:
    # First values: stage 1's setting of the knobs it does not vary (bench.search).
    instances: list[int] = field(default_factory=lambda: [1, 2, 3])
    # []: the deployed model's alone. Below the largest client request the sweep sends a max
    # batch refuses it: the preferred sizes cap one execution instead. Without such requests,
    # list sizes here (4, 8, ... and the deployed one).
    max_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: list[int] = field(default_factory=lambda: [0, 1000])
    preferred_batch_sizes: list[list[int]] = field(default_factory=lambda: [[], [4], [8]])
    threads: list[int] = field(default_factory=lambda: [1, 2])  # per instance, either engine
    # OpenVINO's NUM_STREAMS per instance (an ONNX Runtime model has no such knob: one value)
    streams: list[int] = field(default_factory=lambda: [1, 2])
    # <model>_preprocess instances, measured through the ensemble on the classifier's winner
    # (a stage of its own, staged or not: only the raw path exercises it). []: not searched.
    preprocess_instances: list[int] = field(default_factory=lambda: [1, 2, 3])
    staged: bool = True  # False: the full cartesian product
    concurrency: list[int] = field(default_factory=lambda: [16, 32])
    p99_ms: float = 50.0
    apply: bool = False  # write the winner's config.pbtxt into the repository


@dataclass
class AnalyzerConfig:
    """Model Analyzer's winner (`make model-analyzer`) beside our search's, measured alike."""

    results: str = "bench/results/model_analyzer"  # <results>/<model>/latest/winner.json
    concurrency: list[int] = field(default_factory=lambda: [16, 32])
    rounds: int = 2  # ours then its, then its then ours; each keeps its quietest round


@dataclass
class EnginesConfig:
    """The primary variant's artifact served by each CPU engine with the deployed instances,
    threads and batching (summary.json `engine_gain`)."""

    concurrency: list[int] = field(default_factory=lambda: [16])
    rounds: int = 2  # one engine then the other, then the other way round; quietest kept


@dataclass
class PairedConfig:
    # Rounds of each ratio, its two sides back to back, alternating which goes first; the
    # median of the rounds' ratios is the target's value.
    rounds: int = 4


@dataclass
class BenchConfig:
    repo: str = "model_repository"
    model: str | None = None  # None: the one model family in the repository
    run: str | None = None  # run folder (checkpoint for eager); None: runs/<model>
    out: str = "bench/results"
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    quick: bool = False
    windows: WindowConfig = field(default_factory=WindowConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    inprocess: InprocessConfig = field(default_factory=InprocessConfig)
    served: ServedConfig = field(default_factory=ServedConfig)
    raw: RawConfig = field(default_factory=RawConfig)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    fastapi: FastAPIConfig = field(default_factory=FastAPIConfig)
    perf_analyzer: PerfAnalyzerConfig = field(default_factory=PerfAnalyzerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    paired: PairedConfig = field(default_factory=PairedConfig)


def _positive(name: str, values) -> None:
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{name} must be a non-empty list of positive numbers")


def validate(cfg: BenchConfig) -> BenchConfig:
    unknown = [s for s in cfg.sections if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    w = cfg.windows
    if not (w.window_s > 0 and w.max_s >= w.window_s and w.warmup_s >= 0 and w.windows >= 2):
        raise ConfigError(
            "windows: need window_s > 0, max_s >= window_s, warmup_s >= 0, windows >= 2"
        )
    if not 0 < w.stability < 1:
        raise ConfigError("windows.stability must be in (0, 1), e.g. 0.10")
    _positive("inprocess.batch_sizes", cfg.inprocess.batch_sizes)
    _positive("inprocess.threads", cfg.inprocess.threads)
    _positive("served.concurrency", cfg.served.concurrency)
    _positive("served.grpc_concurrency", cfg.served.grpc_concurrency)
    _positive("served.variant_concurrency", cfg.served.variant_concurrency)
    _positive("served.rates", cfg.served.rates)
    if any(b <= 0 for b in cfg.served.client_batches):
        raise ConfigError("served.client_batches must hold positive batch sizes ([] = none)")
    _positive("served.batch_concurrency", cfg.served.batch_concurrency)
    _positive("raw.concurrency", cfg.raw.concurrency)
    _positive("raw.grpc_concurrency", cfg.raw.grpc_concurrency)
    _positive("raw.batch_concurrency", cfg.raw.batch_concurrency)
    if any(b <= 0 for b in cfg.raw.client_batches):
        raise ConfigError("raw.client_batches must hold positive batch sizes ([] = none)")
    _positive("replicas.counts", cfg.replicas.counts)
    _positive("replicas.concurrency", cfg.replicas.concurrency)
    if any(n <= 0 for n in cfg.search.preprocess_instances):
        raise ConfigError("search.preprocess_instances must hold counts >= 1 ([] = not searched)")
    _positive("search.instances", cfg.search.instances)
    if any(b <= 0 for b in cfg.search.max_batch_sizes):
        raise ConfigError("search.max_batch_sizes must hold sizes >= 1 ([] = the deployed one)")
    _positive("search.threads", cfg.search.threads)
    _positive("search.streams", cfg.search.streams)
    _positive("engines.concurrency", cfg.engines.concurrency)
    _positive("search.concurrency", cfg.search.concurrency)
    _positive("analyzer.concurrency", cfg.analyzer.concurrency)
    for shape in cfg.fastapi.shapes:
        if shape.workers <= 0 or shape.threads <= 0:
            raise ConfigError("fastapi.shapes: workers and threads must be > 0")
    if any(d < 0 for d in cfg.search.max_queue_delay_us) or not cfg.search.max_queue_delay_us:
        raise ConfigError("search.max_queue_delay_us must be a non-empty list of values >= 0")
    if any(b <= 0 for sizes in cfg.search.preferred_batch_sizes for b in sizes):
        raise ConfigError("search.preferred_batch_sizes: batch sizes must be positive")
    if not cfg.search.preferred_batch_sizes:
        raise ConfigError("search.preferred_batch_sizes needs at least one entry ([] = none)")
    if cfg.search.p99_ms <= 0:
        raise ConfigError("p99 budget (--p99-ms / search.p99_ms) must be > 0 ms")
    for name, value in (
        ("served.compare_concurrency", cfg.served.compare_concurrency),
        ("served.max_inflight", cfg.served.max_inflight),
        ("perf_analyzer.measurement_ms", cfg.perf_analyzer.measurement_ms),
        ("perf_analyzer.max_trials", cfg.perf_analyzer.max_trials),
        ("analyzer.rounds", cfg.analyzer.rounds),
        ("engines.rounds", cfg.engines.rounds),
        ("paired.rounds", cfg.paired.rounds),
        ("raw.images", cfg.raw.images),
        ("raw.pipeline_s", cfg.raw.pipeline_s),
        ("inprocess.processes_s", cfg.inprocess.processes_s),
    ):
        if value <= 0:
            raise ConfigError(f"{name} must be > 0")
    if cfg.raw.check_images < 0:
        raise ConfigError("raw.check_images must be >= 0")
    if cfg.noise.busy_cores <= 0 or cfg.noise.retries < 0:
        raise ConfigError("noise: busy_cores must be > 0 and retries >= 0")
    return cfg


def load(path: str | None, overrides: list[str], quick: bool) -> BenchConfig:
    extra = [*QUICK, "quick=true"] if quick else []
    return validate(load_config(BenchConfig, path, [*extra, *overrides]))
