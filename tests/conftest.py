"""Shared fixtures: a tiny Fashion-MNIST ImageFolder and a model trained on it for one epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.fashion_mnist import SOURCE, build

TINY_PARAMS = {"train_per_class": 40, "test_per_class": 20, "val_fraction": 0.25, "seed": 0}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """400 training images as {train,val,test}/<class>/*.png (300 / 100 / 200)."""
    if not (SOURCE / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{SOURCE} missing: run `make setup` (installs dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("data") / "fashion-mnist"
    build(out, TINY_PARAMS)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """runs/tiny/ from one epoch of the real train stage on tiny_data."""
    from train.run import main

    out = tmp_path_factory.mktemp("runs")
    args = ["--data", str(tiny_data), "--name", "tiny", "--epochs", "1",
            f"out_dir={out}", "optim.batch_size=32"]  # fmt: skip
    assert main(args) == 0
    return out / "tiny"
