"""ModelSpec: written once by train (`model_spec.json`), read by every later stage."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from contract.atomic import atomic_write_text

SPEC_VERSION = 1
COLOR_MODES = {"L": 1, "RGB": 3}  # PIL mode -> channel count
RESIZE_POLICIES = ("resize", "resize_center_crop")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
DTYPES = {"float32": "FP32", "uint8": "UINT8"}  # model input dtype -> Triton's name
PROBABILITIES = "probabilities"  # the classifiers' second output: softmax of the logits


def _plain(name: str) -> bool:
    return name.replace("-", "").replace("_", "").isalnum()


class SpecError(ValueError):
    """A model_spec.json that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything a consumer needs to feed the model and read its answer."""

    name: str
    arch: str
    labels: tuple[str, ...]
    height: int
    width: int
    color_mode: str = "RGB"  # PIL mode the image is converted to; fixes channel order
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    resize_policy: str = "resize"  # "resize": straight to HxW; or resize shorter side + crop
    resize_scale: float = 1.0  # with resize_center_crop: shorter side = scale * max(H, W)
    interpolation: str = "bilinear"
    input_name: str = "input"
    output_name: str = "logits"
    probabilities_name: str = PROBABILITIES
    dtype: str = "float32"  # the model's input: normalised float32, or uint8 pixels it normalises
    layout: str = "NCHW"
    version: int = SPEC_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def validate(self) -> ModelSpec:
        problems = []
        # The name becomes folder and Triton model names (<name>, <name>_fp32, ...): one
        # path component, never "..", "/" or empty.
        if not (isinstance(self.name, str) and _plain(self.name)):
            problems.append(f"name {self.name!r} may hold only letters, digits, - and _")
        if not all(isinstance(label, str) and label.isprintable() for label in self.labels):
            problems.append("labels must be printable text (labels.txt holds one a line)")
        if self.version != SPEC_VERSION:
            problems.append(f"version {self.version} is not {SPEC_VERSION}")
        if self.color_mode not in COLOR_MODES:
            problems.append(f"color_mode {self.color_mode!r} is not one of {list(COLOR_MODES)}")
        elif not (len(self.mean) == len(self.std) == self.channels):
            problems.append(f"mean/std need {self.channels} values for {self.color_mode}")
        if any(not (isinstance(s, int | float) and s > 0 and math.isfinite(s)) for s in self.std):
            problems.append("std values must be positive numbers")
        # Finite statistics keep every preprocessed input finite: a NaN or Inf cannot reach a
        # model through the server's preprocessing (docs/serve.md, NaN and Inf).
        if any(not (isinstance(m, int | float) and math.isfinite(m)) for m in self.mean):
            problems.append("mean values must be finite numbers")
        if len(self.labels) < 2:
            problems.append("at least 2 labels are needed")
        if len(set(self.labels)) != len(self.labels):
            problems.append("labels are not unique")
        if not (1 <= self.height <= 4096 and 1 <= self.width <= 4096):
            problems.append(f"size {self.height}x{self.width} is outside 1..4096")
        if self.resize_policy not in RESIZE_POLICIES:
            problems.append(f"resize_policy {self.resize_policy!r} not in {RESIZE_POLICIES}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        if self.resize_scale < 1.0:
            problems.append("resize_scale must be >= 1.0")
        names = (self.input_name, self.output_name, self.probabilities_name)
        if len(set(names)) != 3 or not all(isinstance(n, str) and n for n in names):
            problems.append(f"tensor names {list(names)} must be distinct, non-empty text")
        if self.dtype not in DTYPES or self.layout != "NCHW":
            problems.append(f"only NCHW inputs of {list(DTYPES)} are supported")
        if problems:
            raise SpecError("invalid model spec: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["channels"] = self.channels  # derived, written for readers in other languages
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        if not isinstance(d, dict):
            raise SpecError("model spec must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"channels"}
        if unknown:
            raise SpecError(f"unknown model spec keys: {sorted(unknown)}")
        missing = {"name", "arch", "labels", "height", "width"} - set(d)
        if missing:
            raise SpecError(f"model spec lacks keys: {sorted(missing)}")
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("labels", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        try:
            spec = cls(**kw)
        except TypeError as e:
            raise SpecError(f"malformed model spec: {e}") from None
        if "channels" in d and d["channels"] != spec.channels:
            raise SpecError(f"channels {d['channels']} contradicts color_mode {spec.color_mode}")
        return spec.validate()


def save_spec(spec: ModelSpec, path: str | Path) -> Path:
    spec.validate()
    return atomic_write_text(path, json.dumps(spec.to_dict(), indent=2) + "\n")


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    if path.is_dir():
        path = path / "model_spec.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"model spec not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"model spec {path} is not valid JSON: {e}") from None
    return ModelSpec.from_dict(data)
