"""Fixtures for the optimize stage, built on the session's `tiny_run` (1 epoch, tiny data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from contract import load_spec
from contract.config import from_dict
from optimize.data import Arrays, to_arrays
from optimize.export import export_onnx
from train.checkpoint import model_from_checkpoint, read_checkpoint
from train.config import TrainConfig
from train.data import load_split, scan_folder


@pytest.fixture(scope="session")
def tiny_spec(tiny_run):
    return load_spec(tiny_run)


@pytest.fixture
def tiny_model(tiny_run, tiny_spec):
    return model_from_checkpoint(read_checkpoint(tiny_run / "checkpoint.pt"), tiny_spec)


@pytest.fixture(scope="session")
def tiny_arrays(tiny_run, tiny_spec) -> dict[str, Arrays]:
    """The tiny run's train / val / test splits as preprocessed arrays."""
    cfg = from_dict(TrainConfig, read_checkpoint(tiny_run / "checkpoint.pt")["config"])
    splits = scan_folder(cfg.data, cfg.seed).splits
    return {name: to_arrays(load_split(splits[name], tiny_spec, name, 64)[0]) for name in splits}


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tiny_spec, tmp_path_factory) -> Path:
    model = model_from_checkpoint(read_checkpoint(tiny_run / "checkpoint.pt"), tiny_spec)
    return export_onnx(model, tiny_spec, tmp_path_factory.mktemp("onnx") / "fp32.onnx", 17)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, so each test sees exactly what it writes."""
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny"))
