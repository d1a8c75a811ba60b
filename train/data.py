"""ImageFolder in, preprocessed tensors out, through the same `contract.preprocess` as serving.

A folder is either pre-split (`train/`, optional `val/`, `test/`, each `<class>/<image>`) or
flat (`<class>/<image>`, split here, stratified and seeded).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from contract import ImageError, ModelSpec, load_image, preprocess
from train import distributed
from train.config import DataConfig

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset folder that cannot be used as it is."""


@dataclass
class Split:
    files: list[Path]
    labels: list[int]


@dataclass
class FolderScan:
    classes: list[str]
    splits: dict[str, Split]
    skipped: list[tuple[Path, str]]  # (path, why) of files that are not readable images


def _list_classes(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes[d.name] = sorted(
            f for f in d.rglob("*") if f.is_file() and not f.name.startswith(".")
        )
    return classes


def stratified_split(labels: list[int], fractions: tuple[float, ...], seed: int) -> list[list[int]]:
    """Indices per part; every class is cut in the same proportions (rest goes to part 0)."""
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    for idx in by_class.values():
        rng.shuffle(idx)
        start = 0
        counts = [round(len(idx) * f) for f in fractions]
        for part, n in enumerate(counts, start=1):
            parts[part].extend(idx[start : start + n])
            start += n
        parts[0].extend(idx[start:])
    return [sorted(p) for p in parts]


def _cap(split: Split, cap: int | None, seed: int) -> Split:
    if cap is None:
        return split
    rng = random.Random(seed)
    keep: list[int] = []
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(split.labels):
        by_class.setdefault(y, []).append(i)
    for idx in by_class.values():
        keep.extend(rng.sample(idx, min(cap, len(idx))))
    keep.sort()
    return Split([split.files[i] for i in keep], [split.labels[i] for i in keep])


def scan_folder(cfg: DataConfig, seed: int) -> FolderScan:
    """Find classes and files and split them; errors name the folder and the problem."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    presplit = (root / "train").is_dir()
    by_split = {s: _list_classes(root / s) for s in SPLITS if (root / s).is_dir()}
    if not presplit:
        by_split = {"all": _list_classes(root)}
    source = by_split["train" if presplit else "all"]
    if len(source) < 2:
        where = root / "train" if presplit else root
        raise DataError(f"{where} needs at least 2 class folders, found {len(source)}")
    empty = [c for c, files in source.items() if not files]
    if empty:
        raise DataError(f"class folder {root / ('train' if presplit else '') / empty[0]} is empty")
    classes = list(source)
    for split, found in by_split.items():
        extra = set(found) - set(classes)
        if extra:
            raise DataError(f"{root / split} has classes not in train: {sorted(extra)}")

    def flatten(found: dict[str, list[Path]]) -> Split:
        files = [f for c in classes for f in found.get(c, [])]
        labels = [classes.index(c) for c in classes for _ in found.get(c, [])]
        return Split(files, labels)

    splits = {name: flatten(found) for name, found in by_split.items()}
    splits = _fill_missing_splits(splits, cfg, seed)
    splits = {name: _cap(s, cfg.max_per_class, seed) for name, s in splits.items()}
    return FolderScan(classes=classes, splits=splits, skipped=[])


def _fill_missing_splits(splits: dict[str, Split], cfg: DataConfig, seed: int) -> dict:
    base = splits.pop("all", None) or splits["train"]
    wanted = [s for s in ("val", "test") if s not in splits]
    if not wanted:
        return splits
    fractions = tuple(cfg.val_fraction if s == "val" else cfg.test_fraction for s in wanted)
    parts = stratified_split(base.labels, fractions, seed)
    out = dict(splits)
    out["train"] = Split([base.files[i] for i in parts[0]], [base.labels[i] for i in parts[0]])
    for name, idx in zip(wanted, parts[1:], strict=True):
        out[name] = Split([base.files[i] for i in idx], [base.labels[i] for i in idx])
    return out


def detect_color_mode(files: list[Path], sample: int = 64) -> str:
    """L when every sampled readable image is grayscale, else RGB."""
    for f in files[:: max(1, len(files) // sample)][:sample]:
        try:
            img = load_image(f)
        except ImageError:
            continue
        if img.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
            rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
            if np.abs(rgb[..., 0] - rgb[..., 1]).max() or np.abs(rgb[..., 1] - rgb[..., 2]).max():
                return "RGB"
    return "L"


def measure_mean_std(files: list[Path], spec: ModelSpec, sample: int = 2000) -> tuple:
    """Per-channel mean/std of the training images after resizing, on a fixed sample."""
    raw = ModelSpec(
        **{**spec.__dict__, "mean": (0.0,) * spec.channels, "std": (1.0,) * spec.channels}
    )
    step = max(1, len(files) // sample)
    arrays = []
    for f in files[::step][:sample]:
        try:
            arrays.append(preprocess(f, raw).reshape(spec.channels, -1))
        except ImageError:
            continue
    stacked = np.concatenate(arrays, axis=1)
    std = np.maximum(stacked.std(axis=1), 1e-3)
    return tuple(round(float(v), 4) for v in stacked.mean(axis=1)), tuple(
        round(float(v), 4) for v in std
    )


class ImageDataset(Dataset):
    """(tensor, label) pairs through contract.preprocess; cached in memory when it fits."""

    def __init__(self, split: Split, spec: ModelSpec, cache: np.ndarray | None = None):
        self.files, self.labels, self.spec, self.cache = split.files, split.labels, spec, cache

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        x = self.cache[i] if self.cache is not None else preprocess(self.files[i], self.spec)
        return torch.from_numpy(x), self.labels[i]


def load_split(
    split: Split, spec: ModelSpec, name: str, cache_max_mb: int
) -> tuple[ImageDataset, list[tuple[Path, str]]]:
    """Decode every image once: bad files are reported and dropped; cache if it fits."""
    per_image = spec.channels * spec.height * spec.width * 4
    keep_cache = per_image * len(split.files) <= cache_max_mb * 2**20
    arrays, files, labels, skipped = [], [], [], []
    quiet = not distributed.is_main()
    for f, y in zip(
        tqdm(split.files, desc=f"reading {name}", unit="img", leave=False, disable=quiet),
        split.labels,
        strict=True,
    ):
        try:
            x = preprocess(f, spec)
        except ImageError as e:
            skipped.append((f, str(e)))
            continue
        files.append(f)
        labels.append(y)
        if keep_cache:
            arrays.append(x)
    cache = np.stack(arrays) if keep_cache and arrays else None
    return ImageDataset(Split(files, labels), spec, cache), skipped


def class_counts(labels: list[int], num_classes: int) -> np.ndarray:
    counts = Counter(labels)
    return np.array([counts.get(c, 0) for c in range(num_classes)], dtype=np.float64)


def make_loader(
    ds: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    workers: int = 0,
    weighted: bool = False,
    num_classes: int = 0,
    shard: bool = False,
) -> DataLoader:
    """`shard`: under torchrun each rank loads its part (train.distributed) of a global batch
    of `batch_size`; without a process group it changes nothing."""
    generator = torch.Generator().manual_seed(seed)
    sampler, weights = None, None
    if weighted:
        counts = class_counts(ds.labels, num_classes)
        weights = (1.0 / np.maximum(counts, 1))[ds.labels]
        sampler = WeightedRandomSampler(weights.tolist(), len(ds), generator=generator)
        shuffle = False
    if shard and distributed.active():
        sampler = distributed.sampler(
            len(ds), train=shuffle or weighted, seed=seed, weights=weights
        )
        shuffle, batch_size = False, distributed.local_batch(batch_size)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
    )
