"""`make data`: Debian's Fashion-MNIST idx files -> an ImageFolder like a user's own data.

data/fashion-mnist/{train,val,test}/<class>/<index>.png; val is a stratified, seeded cut of
the official training set, test is the official 10k test set. Built in a temp folder and
swapped in, so an interrupted run never leaves a half-written dataset.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from contract.atomic import staged_dir
from train.data import stratified_split

SOURCE = Path("/usr/share/datasets/fashion-mnist")
# Label names as the dataset's README lists them ("/" would make a path, so it becomes "_").
LABELS = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
MARKER = ".dataset.json"
Saver = Callable[[np.ndarray, Path], None]


def read_idx(path: Path) -> np.ndarray:
    """The idx format: magic (2 zero bytes, dtype code, ndim), big-endian dims, raw data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def cap_per_class(labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    idx = np.arange(len(labels))
    if cap is None:
        return idx
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(idx[labels == c])[:cap] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def save_png(image: np.ndarray, stem: Path) -> None:
    Image.fromarray(image).save(stem.with_suffix(".png"))


def write_split(root: Path, name: str, images, labels, idx, save: Saver) -> None:
    for c in LABELS:
        (root / name / c).mkdir(parents=True)
    for i in tqdm(idx, desc=f"writing {name}", unit="img", leave=False):
        save(images[i], root / name / LABELS[labels[i]] / f"{i:05d}")


def build(out: Path, params: dict, source: Path = SOURCE, save: Saver = save_png) -> None:
    """Write the three splits; `save(image_28x28, path_without_suffix)` writes one image."""
    train_x = read_idx(source / "train-images-idx3-ubyte.gz")
    train_y = read_idx(source / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(source / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    pool = cap_per_class(train_y, params["train_per_class"], params["seed"])
    train_part, val_part = stratified_split(
        train_y[pool].tolist(), (params["val_fraction"],), params["seed"]
    )
    test_idx = cap_per_class(test_y, params["test_per_class"], params["seed"])
    with staged_dir(out) as tmp:
        write_split(tmp, "train", train_x, train_y, pool[train_part], save)
        write_split(tmp, "val", train_x, train_y, pool[val_part], save)
        write_split(tmp, "test", test_x, test_y, test_idx, save)
        counts = {"train": len(train_part), "val": len(val_part), "test": len(test_idx)}
        (tmp / MARKER).write_text(json.dumps({**params, "counts": counts}, indent=2))


def add_arguments(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, type=Path)
    p.add_argument("--train-per-class", type=int, help="cap on training+val images per class")
    p.add_argument("--test-per-class", type=int, help="cap on test images per class")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)


def write_dataset(out: Path, params: dict, save: Saver = save_png) -> int:
    """Build `out` unless its marker says it was built with these params; exit code."""
    if not (SOURCE / "train-images-idx3-ubyte.gz").is_file():
        print(
            f"error: {SOURCE} not found: install the Debian package dataset-fashion-mnist "
            "(make setup does)",
            file=sys.stderr,
        )
        return 2
    if not 0 < params["val_fraction"] < 1:
        print("error: --val-fraction must be in (0, 1)", file=sys.stderr)
        return 2
    marker = out / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in params} == params:
            print(f"data: {out} is up to date ({done['counts']})")
            return 0
    print(f"data: writing Fashion-MNIST as an ImageFolder to {out} ...")
    build(out, params, save=save)
    print(f"data: wrote {out} ({json.loads(marker.read_text())['counts']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.fashion_mnist", description=__doc__)
    add_arguments(p, "data/fashion-mnist")
    args = p.parse_args(argv)
    params = {
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
    }
    return write_dataset(args.out, params)


if __name__ == "__main__":
    sys.exit(main())
