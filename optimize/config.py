"""The optimize stage's typed config: configs/optimize.yaml, then `key.sub=value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.spec import DTYPES

TARGETS = ("cpu", "tensorrt")
ENGINES = ("onnxruntime", "openvino")  # the CPU engines optimize measures and deploys on
IMPORTANCES = ("magnitude", "taylor", "lamp", "fpgm", "bn_scale", "random")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class OptimizeError(ValueError):
    """Bad input or a failed check: reported as one `error: ...` line."""


@dataclass
class DataConfig:
    root: str | None = None  # None: the folder the run was trained on (from its checkpoint)
    calibration_images: int = 512  # training images that calibrate INT8 activation ranges
    # Fewer images give unreliable INT8 ranges; lower it only for tiny test runs.
    min_calibration_images: int = 500
    selection_images: int | None = None  # validation images that pick the calibration method
    cache_max_mb: int = 2048


@dataclass
class ExportConfig:
    opset: int = 17
    tolerance: float = 1e-4  # max |ORT - PyTorch| on a validation batch
    # What the served models take: "uint8" pixels they normalise themselves (a quarter of
    # the bytes through HTTP and the ensemble), or "float32" normalised by the sender.
    served_input: str = "uint8"


@dataclass
class FinetuneConfig:
    """Recovers accuracy after pruning, through train.engine.fit."""

    epochs: int = 6
    train_images: int | None = None  # random training subset; None: the whole split
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.1


@dataclass
class PruneConfig:
    enabled: bool = True
    importance: str = "magnitude"  # one of IMPORTANCES
    global_pruning: bool = False  # False: every layer loses the same share of channels
    ratio: float = 0.5  # share of channels removed (used unless macs_reduction is set)
    macs_reduction: float | None = None  # instead: remove at least this share of MACs
    max_ratio: float = 0.9  # no layer loses more channels than this
    iterative_steps: int = 5  # steps to reach `ratio` (or max_ratio when chasing MACs)
    round_to: int | None = 8  # channel counts stay multiples of this (SIMD-friendly)
    taylor_batches: int = 4  # training batches whose gradients score channels (taylor)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class QuantizeConfig:
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    methods: list[str] = field(default_factory=lambda: list(CALIBRATION_METHODS))
    percentile: float = 99.999
    reduce_range: bool = False  # 7-bit weights: only for CPUs without VNNI (ORT's advice)
    float_stem: bool = True  # cpu target: the conv reading the image stays FP32 (faster)
    fallback: bool = True  # over budget: keep the most sensitive layer groups in FP32
    fallback_margin: float = 0.25  # points: fall back until the val drop <= max drop - this
    sensitivity_images: int = 256  # validation images that rank the groups' sensitivity


@dataclass
class BenchConfig:
    """In-process ONNX Runtime timing; every variant gets the same settings."""

    threads: int = 1  # ORT intra-op threads
    rounds: int = 5  # the variants are interleaved round by round
    seconds: float = 0.3  # per variant, batch size and round
    warmup: int = 10


@dataclass
class RepositoryConfig:
    path: str = "model_repository"
    max_batch_size: int = 32
    # []: the batcher takes whatever has queued (up to max_batch_size); a preferred size
    # would cut batches at it under heavy load.
    preferred_batch_size: list[int] = field(default_factory=list)
    # 0: a lone request never waits (a wait is pure latency at low load); under load the
    # requests that queue while one instance computes still form batches (make bench).
    max_queue_delay_microseconds: int = 0
    # 2 x 1 thread: one instance computes while the other's requests cross the IPC, so both
    # cores stay busy (make bench's config search: ahead of 1 x 1 and 1 x 2 on 2 cores).
    instances: int = 2
    # Decoding stubs of <name>_preprocess (processes, so they decode in parallel): the raw
    # path's throughput on 2 cores (make bench; its config search tunes this too).
    preprocess_instances: int = 2
    intra_op_threads: int = 1  # per Triton model instance (onnxruntime backend parameters)
    inter_op_threads: int = 1
    # The CPU backends the serving host has: each variant deploys on the fastest of these
    # that passes the gate (both are always measured and reported).
    engines: list[str] = field(default_factory=lambda: list(ENGINES))


@dataclass
class TensorRTConfig:
    enabled: bool = True
    workspace_mb: int = 1024


@dataclass
class OptimizeConfig:
    seed: int = 0
    threads: int = 0  # threads for pruning, fine-tuning and accuracy runs; 0 = all cores
    max_accuracy_drop: float = 1.0  # top-1 points below FP32 beyond which nothing deploys
    data: DataConfig = field(default_factory=DataConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    repository: RepositoryConfig = field(default_factory=RepositoryConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)

    def validate(self) -> OptimizeConfig:
        p, q, r = self.prune, self.quantize, self.repository
        unknown_targets = sorted(set(q.targets) - set(TARGETS))
        unknown_methods = sorted(set(q.methods) - set(CALIBRATION_METHODS))
        checks = [
            (not unknown_targets, f"unknown target {unknown_targets}; known: {list(TARGETS)}"),
            (
                not unknown_methods,
                f"unknown calibration method {unknown_methods}; known: {list(CALIBRATION_METHODS)}",
            ),
            (bool(q.methods), "quantize.methods is empty"),
            (0 < p.ratio < 1, f"prune.ratio {p.ratio} is outside (0, 1)"),
            (
                p.macs_reduction is None or 0 < p.macs_reduction < 1,
                f"prune.macs_reduction {p.macs_reduction} is outside (0, 1)",
            ),
            (0 < p.max_ratio < 1, f"prune.max_ratio {p.max_ratio} is outside (0, 1)"),
            (p.importance in IMPORTANCES, f"unknown importance {p.importance!r}: {IMPORTANCES}"),
            (p.iterative_steps >= 1, "prune.iterative_steps must be >= 1"),
            (p.finetune.epochs >= 0, "prune.finetune.epochs must be >= 0"),
            (p.finetune.lr > 0, "prune.finetune.lr must be > 0"),
            (self.data.calibration_images >= 1, "data.calibration_images must be >= 1"),
            (
                self.data.calibration_images >= self.data.min_calibration_images,
                f"data.calibration_images {self.data.calibration_images} is below "
                f"{self.data.min_calibration_images}: INT8 ranges from so few images are "
                "unreliable (a tiny test run may lower data.min_calibration_images)",
            ),
            (0 < q.percentile <= 100, "quantize.percentile must be in (0, 100]"),
            (self.max_accuracy_drop >= 0, "max_accuracy_drop must be >= 0"),
            (self.export.opset >= 17, "export.opset must be >= 17"),
            (
                self.export.served_input in DTYPES,
                f"export.served_input must be one of {list(DTYPES)}",
            ),
            (r.max_batch_size >= 1, "repository.max_batch_size must be >= 1"),
            (
                all(1 <= b <= r.max_batch_size for b in r.preferred_batch_size),
                "repository.preferred_batch_size must lie in 1..max_batch_size",
            ),
            (r.instances >= 1, "repository.instances must be >= 1"),
            (r.preprocess_instances >= 1, "repository.preprocess_instances must be >= 1"),
            (
                bool(r.engines) and set(r.engines) <= set(ENGINES),
                f"repository.engines must be a non-empty subset of {list(ENGINES)}",
            ),
            (self.bench.rounds >= 1 and self.bench.seconds > 0, "bench needs rounds and seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptimizeError(message)
        return self
