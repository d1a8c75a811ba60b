from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contract import preprocess
from train.config import DataConfig
from train.data import DataError, load_split, scan_folder, stratified_split
from train.run import build_config, build_spec, parse_args


def test_stratified_split_keeps_class_proportions():
    labels = [0] * 100 + [1] * 300 + [2] * 40
    train, val, test = stratified_split(labels, (0.1, 0.2), seed=3)
    assert sorted(train + val + test) == list(range(len(labels)))
    assert Counter(labels[i] for i in val) == {0: 10, 1: 30, 2: 4}
    assert Counter(labels[i] for i in test) == {0: 20, 1: 60, 2: 8}
    assert stratified_split(labels, (0.1, 0.2), seed=3) == [train, val, test]
    assert stratified_split(labels, (0.1, 0.2), seed=4) != [train, val, test]


def test_flat_folder_is_split_and_presplit_is_kept(make_folder, tmp_path):
    flat = make_folder(tmp_path / "flat", {"cat": 20, "dog": 10})
    scan = scan_folder(DataConfig(root=str(flat), val_fraction=0.2, test_fraction=0.1), 0)
    assert scan.classes == ["cat", "dog"]
    assert {k: len(v.files) for k, v in scan.splits.items()} == {"train": 21, "val": 6, "test": 3}
    pre = tmp_path / "pre"
    make_folder(pre / "train", {"a": 5, "b": 5})
    make_folder(pre / "test", {"a": 2, "b": 2})
    scan = scan_folder(DataConfig(root=str(pre), val_fraction=0.2), 0)
    assert len(scan.splits["test"].files) == 4 and len(scan.splits["val"].files) == 2


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "needs at least 2 class folders, found 0"),
        ({"only": 3}, "needs at least 2 class folders, found 1"),
        ({"a": 3, "b": 0}, "is empty"),
    ],
)
def test_bad_folders_give_one_line_errors(make_folder, tmp_path, layout, message):
    root = make_folder(tmp_path / "d", {k: v for k, v in layout.items() if v})
    root.mkdir(exist_ok=True)
    for k, v in layout.items():
        if v == 0:
            (root / k).mkdir()
    with pytest.raises(DataError, match=message):
        scan_folder(DataConfig(root=str(root)), 0)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        scan_folder(DataConfig(root=str(tmp_path / "nope")), 0)


def test_corrupt_files_are_reported_and_skipped(make_folder, tmp_path):
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "broken.png").write_bytes((root / "b" / "0.png").read_bytes()[:50])
    cfg = DataConfig(root=str(root), val_fraction=0.1, test_fraction=0.1, color_mode="RGB")
    scan = scan_folder(cfg, 0)
    spec = build_spec(build_config(parse_args(["--data", str(root)])), scan.classes,
                      scan.splits["train"].files)  # fmt: skip
    everything = scan.splits["train"]
    for name in ("val", "test"):
        everything.files += scan.splits[name].files
        everything.labels += scan.splits[name].labels
    ds, skipped = load_split(everything, spec, "all", cache_max_mb=64)
    assert sorted(p.name for p, _ in skipped) == ["broken.png", "notes.txt"]
    assert len(ds) == 8


def test_dataset_items_equal_contract_preprocess(tiny_data):
    """Training and evaluation read images through the same function the client uses."""
    cfg = build_config(parse_args(["--data", str(tiny_data)]))
    scan = scan_folder(cfg.data, 0)
    spec = build_spec(cfg, scan.classes, scan.splits["train"].files)
    for cache_mb in (64, 0):  # in-memory cache and lazy reading
        ds, _ = load_split(scan.splits["test"], spec, "test", cache_max_mb=cache_mb)
        for i in (0, 7, len(ds) - 1):
            x, y = ds[i]
            expected = preprocess(Path(ds.files[i]).read_bytes(), spec)
            np.testing.assert_array_equal(x.numpy(), expected)
            assert y == scan.classes.index(Path(ds.files[i]).parent.name)
