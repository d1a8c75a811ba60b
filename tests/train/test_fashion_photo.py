"""`make data-photo`: Fashion-MNIST as 224 px RGB JPEGs, balanced, split, written once."""

import json

import numpy as np
from PIL import Image

from train.fashion_mnist import MARKER, SOURCE, read_idx
from train.fashion_photo import main


def test_writes_balanced_rgb_jpegs_of_the_source_images(tmp_path, capsys):
    out = tmp_path / "photo"
    args = ["--out", str(out), "--train-per-class", "6", "--test-per-class", "2",
            "--val-fraction", "0.5", "--size", "64", "--quality", "90"]  # fmt: skip
    assert main(args) == 0
    counts = {split: sorted(len(list(d.iterdir())) for d in (out / split).iterdir())
              for split in ("train", "val", "test")}  # fmt: skip
    assert counts == {"train": [3] * 10, "val": [3] * 10, "test": [2] * 10}
    files = sorted((out / "test").rglob("*.jpg"))
    assert len(files) == 20 and not list(out.rglob("*.png"))
    photo = Image.open(files[0])
    assert photo.format == "JPEG" and photo.mode == "RGB" and photo.size == (64, 64)
    # The file is its Fashion-MNIST test image, upsampled: same content at 28 px.
    index = int(files[0].stem)
    source = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")[index].astype(np.float32)
    small = np.asarray(photo.convert("L").resize((28, 28), Image.Resampling.BOX), np.float32)
    assert np.corrcoef(source.ravel(), small.ravel())[0, 1] > 0.95
    assert json.loads((out / MARKER).read_text())["size"] == 64
    assert main(args) == 0 and "up to date" in capsys.readouterr().out


def test_bad_size_is_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--size", "5"]) == 2
    assert capsys.readouterr().err.startswith("error: --size must be in 28..1024")
    assert not (tmp_path / "x").exists()
