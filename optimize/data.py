"""The images optimize needs, read through the train stage's own data code (same splits)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from contract import ModelSpec
from optimize.config import OptimizeConfig, OptimizeError
from train.config import TrainConfig
from train.data import DataError, ImageDataset, Split, load_split, scan_folder


@dataclass
class Arrays:
    x: np.ndarray  # float32 (N, C, H, W), already preprocessed
    y: np.ndarray  # int64 (N,)

    def head(self, n: int | None) -> Arrays:
        return self if n is None else Arrays(self.x[:n], self.y[:n])


@dataclass
class OptimizeData:
    train: ImageDataset  # random training subset: fine-tuning, Taylor scores, calibration
    val: ImageDataset
    calibration: np.ndarray
    selection: Arrays  # validation images that choose the calibration method
    test: Arrays


def subsample(split: Split, n: int | None, seed: int) -> Split:
    """A seeded random subset, so a capped fine-tune still sees every class."""
    if n is None or n >= len(split.files):
        return split
    keep = sorted(random.Random(seed).sample(range(len(split.files)), n))
    return Split([split.files[i] for i in keep], [split.labels[i] for i in keep])


def to_arrays(ds: ImageDataset) -> Arrays:
    x = ds.cache if ds.cache is not None else np.stack([ds[i][0].numpy() for i in range(len(ds))])
    return Arrays(np.ascontiguousarray(x, dtype=np.float32), np.asarray(ds.labels, np.int64))


def load_data(train_cfg: TrainConfig, spec: ModelSpec, cfg: OptimizeConfig) -> OptimizeData:
    data_cfg = train_cfg.data
    if cfg.data.root is not None:
        data_cfg = replace(data_cfg, root=cfg.data.root)
    try:
        scan = scan_folder(data_cfg, train_cfg.seed)
    except DataError as e:
        raise OptimizeError(str(e)) from None
    if tuple(scan.classes) != spec.labels:
        raise OptimizeError(f"classes in {data_cfg.root} differ from the spec's labels")
    wanted = cfg.data.calibration_images
    if cfg.prune.enabled:
        wanted = max(wanted, cfg.prune.finetune.train_images or len(scan.splits["train"].files))
    train_split = subsample(scan.splits["train"], wanted, cfg.seed)
    loaded = {}
    for name, split in (("train", train_split), ("val", None), ("test", None)):
        split = split or scan.splits[name]
        loaded[name], _ = load_split(split, spec, name, cfg.data.cache_max_mb)
        if len(loaded[name]) == 0:
            raise OptimizeError(f"the {name} split of {data_cfg.root} has no readable images")
    train = to_arrays(loaded["train"])
    if len(train.y) < min(wanted, len(scan.splits["train"].files)):
        print(f"note: {len(train.y)} readable training images (wanted {wanted})")
    # A fixed permutation: the calibration set is a random draw, not the first classes' files.
    order = np.random.default_rng(cfg.seed).permutation(len(train.y))
    val = to_arrays(loaded["val"])
    val_order = np.random.default_rng(cfg.seed).permutation(len(val.y))
    selection = Arrays(val.x[val_order], val.y[val_order]).head(cfg.data.selection_images)
    return OptimizeData(
        train=loaded["train"],
        val=loaded["val"],
        calibration=train.x[order[: cfg.data.calibration_images]],
        selection=selection,
        test=to_arrays(loaded["test"]),
    )
