"""`make data-photo`: Fashion-MNIST rendered as 224x224 RGB JPEGs, a stand-in for photos.

data/fashion-photo/{train,val,test}/<class>/<index>.jpg, split as `make data` splits (val a
stratified cut of the official training set, test from the official test set), classes
balanced. Each 28x28 image is upsampled (bicubic), converted to RGB and saved as JPEG, so
payloads, decoding and resizing cost what real photos of that size cost. The content is
still a 28 px gray image: there is no more detail in it than in Fashion-MNIST itself.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from train.fashion_mnist import add_arguments, write_dataset

# 300 a class of the training set (250 train + 50 val) and 100 a class of the test set:
# 2,500 / 500 / 1,000 images, what `make demo-photo` trains on within its time budget.
DEFAULTS = {"train_per_class": 300, "test_per_class": 100, "val_fraction": 1 / 6}


def save_jpeg(image: np.ndarray, stem: Path, size: int, quality: int) -> None:
    photo = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    photo.convert("RGB").save(stem.with_suffix(".jpg"), quality=quality)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.fashion_photo", description=__doc__)
    add_arguments(p, "data/fashion-photo")
    p.add_argument("--size", type=int, default=224, help="width and height in pixels")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (1-95)")
    p.set_defaults(**DEFAULTS)
    args = p.parse_args(argv)
    if not (28 <= args.size <= 1024 and 1 <= args.quality <= 95):
        print("error: --size must be in 28..1024 and --quality in 1..95", file=sys.stderr)
        return 2
    params = {
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "size": args.size,
        "quality": args.quality,
    }
    save = functools.partial(save_jpeg, size=args.size, quality=args.quality)
    return write_dataset(args.out, params, save)


if __name__ == "__main__":
    sys.exit(main())
