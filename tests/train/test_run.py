"""The train stage end to end on tiny data: outputs, contract, resume, CLI errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from contract import load_spec, preprocess
from contract.config import from_dict
from train.checkpoint import model_from_checkpoint, read_checkpoint
from train.config import TrainConfig
from train.data import scan_folder
from train.run import main

pytestmark = pytest.mark.slow


def test_run_writes_all_outputs(tiny_run):
    for name in ("checkpoint.pt", "last.pt", "model_spec.json", "metrics.json",
                 "confusion_matrix.png", "curves.png"):  # fmt: skip
        assert (tiny_run / name).is_file(), name
    blob = torch.load(tiny_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert blob["arch"] == "resnet_small" and "state_dict" in blob
    spec = load_spec(tiny_run)
    assert spec.num_classes == 10 and spec.color_mode == "L" and spec.height == 28
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 200 and metrics["train_seconds"] > 0
    assert (tiny_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_test_metrics_are_the_checkpoints_own_on_the_test_split(tiny_run):
    """Recomputed here, outside train.metrics: the saved model on the test split's files."""
    blob = read_checkpoint(tiny_run / "checkpoint.pt")
    spec = load_spec(tiny_run)
    cfg = from_dict(TrainConfig, blob["config"])
    test = scan_folder(cfg.data, cfg.seed).splits["test"]
    model = model_from_checkpoint(blob, spec).eval()
    x = torch.from_numpy(np.stack([preprocess(f, spec) for f in test.files]))
    with torch.inference_mode():
        logits = model(x).numpy()
    y = np.array(test.labels)
    ranked = np.argsort(-logits, axis=1)
    reported = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert reported["n"] == len(y) == 200
    assert reported["top1"] == pytest.approx(float((ranked[:, 0] == y).mean()), abs=1e-6)
    assert reported["top5"] == pytest.approx(float((ranked[:, :5] == y[:, None]).any(1).mean()))
    confusion = np.zeros((spec.num_classes, spec.num_classes), dtype=int)
    np.add.at(confusion, (y, ranked[:, 0]), 1)
    assert np.array_equal(np.array(reported["confusion_matrix"]), confusion)


def test_resume_continues_after_the_last_epoch(tiny_run, tiny_data, tmp_path):
    out = tmp_path / "runs"
    base = ["--data", str(tiny_data), "--name", "r", f"out_dir={out}", "optim.batch_size=64"]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    history = json.loads((out / "r" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert read_checkpoint(out / "r" / "last.pt")["fit_state"]["epoch"] == 2


def test_init_from_and_frozen_backbone(tiny_run, tiny_data, tmp_path, capsys):
    args = ["--data", str(tiny_data), "--name", "ft", f"out_dir={tmp_path}", "--epochs", "1",
            "--init-from", str(tiny_run / "checkpoint.pt"), "--freeze-backbone"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "loaded" in out and "backbone frozen" in out
    before = read_checkpoint(tiny_run / "checkpoint.pt")["state_dict"]
    after = read_checkpoint(tmp_path / "ft" / "checkpoint.pt")["state_dict"]
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent"], "data folder not found: /nonexistent"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
        (["optim.lrr=1"], "unknown config key: optim.lrr"),
        (["optim.schedule=linear"], "optim.schedule must be"),
        (["--init-from", "/nonexistent.pt"], "checkpoint not found"),
        (["model.arch=resnet9"], "unknown model 'resnet9'"),
        (
            ["optim.epochs=0", "optim.lr=0"],
            "optim.epochs must be >= 1; optim.lr must be > 0",  # every problem, in one line
        ),
    ],
)
def test_cli_errors_are_one_line(args, message, tiny_data, tmp_path):
    if "--data" not in args:
        args = ["--data", str(tiny_data), f"out_dir={tmp_path}", *args]
    proc = subprocess.run([sys.executable, "-m", "train", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "default").exists()


def test_binary_imbalanced_rgb_folder(make_folder, tmp_path):
    """A flat, imbalanced, colour folder of odd-sized images: split, weighted, FAR/FRR/HTER."""
    root = make_folder(tmp_path / "spoof", {"live": 40, "spoof": 12}, size=(23, 17))
    args = ["--data", str(root), "--name", "bin", f"out_dir={tmp_path}", "--epochs", "1",
            "data.height=16", "data.width=16", "data.color_mode=auto", "data.mean=null",
            "data.std=null", "data.val_fraction=0.25", "data.test_fraction=0.25",
            "imbalance.weighted_sampler=true", "imbalance.class_weighted_loss=true",
            "positive_class=spoof", "optim.batch_size=8"]  # fmt: skip
    assert main(args) == 0
    spec = load_spec(tmp_path / "bin")
    assert spec.color_mode == "RGB" and spec.labels == ("live", "spoof")
    assert spec.mean != (0.286,) and len(spec.mean) == 3
    test = json.loads((tmp_path / "bin" / "metrics.json").read_text())["test"]
    assert test["n"] == 13 and test["positive_class"] == 1
    assert test["hter"] == pytest.approx((test["far"] + test["frr"]) / 2)
    assert 0.0 <= test["roc_auc"] <= 1.0


def test_a_bug_keeps_its_traceback(monkeypatch, tiny_data, tmp_path):
    """main turns the project's own errors into one line; any other ValueError is a bug and
    must surface with its traceback, not as a tidy 'error:' line."""

    def broken(cfg):
        raise ValueError("a bug, not a user's mistake")

    monkeypatch.setattr("train.run.run", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["--data", str(tiny_data), f"out_dir={tmp_path}"])
