"""torch.distributed training: real torchrun, 2 processes, gloo on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import train_models

from train.distributed import ShardSampler, WeightedDistributedSampler

TORCHRUN = Path(sys.executable).parent / "torchrun"
WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
# Gradient all-reduce sums in another order than one process does: after 8 SGD steps with
# momentum every weight agrees with the one-process run to 1e-5 (measured: 3e-8).
TOLERANCE = 1e-5


def torchrun(*args: str, nproc: int = 2, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (its own free rendezvous port) with `nproc` CPU processes."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{WORKER.parent}"}
    return subprocess.run(
        [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    result = torchrun(str(WORKER), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("name", ["plain", "batchnorm"])
def test_both_ranks_end_with_identical_weights(ranks, name):
    a, b = (r[name]["state_dict"] for r in ranks)
    assert a.keys() == b.keys()
    for key in a:  # BatchNorm's running statistics included
        assert torch.equal(a[key], b[key]), key


def test_two_processes_match_one_on_the_same_global_batch(ranks):
    """BatchNorm normalizes over each rank's half batch, so only the plain model can match."""
    one = train_models(reference=True)["plain"]
    ddp = ranks[0]["plain"]
    for key, want in one["state_dict"].items():
        got = ddp["state_dict"][key]
        assert torch.allclose(got, want, rtol=0, atol=TOLERANCE), (key, (got - want).abs().max())
    for h_ddp, h_one in zip(ddp["history"], one["history"], strict=True):
        assert h_ddp["val_top1"] == h_one["val_top1"]  # all 25 images, gathered from 2 shards
        assert h_ddp["train_loss"] == pytest.approx(h_one["train_loss"], abs=TOLERANCE)
        assert h_ddp["val_loss"] == pytest.approx(h_one["val_loss"], abs=TOLERANCE)


def test_weighted_sampler_ranks_share_one_draw_a_epoch():
    weights = [1.0] * 6 + [10.0] * 2  # two rare samples drawn ~4x as often as the rest
    parts = [WeightedDistributedSampler(weights, 1000, 2, r, seed=3) for r in (0, 1)]
    first = [list(p) for p in parts]
    assert [len(f) for f in first] == [500, 500]
    merged = [i for pair in zip(*first, strict=True) for i in pair]
    whole = WeightedDistributedSampler(weights, 1000, 1, 0, seed=3)
    assert merged == list(whole)  # the two ranks split one weighted draw
    rare = sum(i >= 6 for i in merged) / len(merged)
    assert 0.65 < rare < 0.85  # expected 20/26 = 0.77
    for p in parts:
        p.set_epoch(1)
    assert [list(p) for p in parts] != first


@pytest.mark.parametrize("n", [7, 8, 1])
def test_shards_cover_every_sample_once_in_order(n):
    shards = [list(ShardSampler(n, 3, r)) for r in range(3)]
    assert [i for s in shards for i in s] == list(range(n))


@pytest.mark.slow
def test_torchrun_train_writes_one_run_and_resumes(tiny_data, tmp_path):
    base = ["-m", "train", "--data", str(tiny_data), "--name", "ddp", f"out_dir={tmp_path}"]
    bad = torchrun(*base, "--epochs", "1", "optim.batch_size=33")
    assert bad.returncode != 0
    assert "error: batch size 33 does not split over 2 processes" in bad.stderr
    assert not (tmp_path / "ddp" / "checkpoint.pt").exists()

    first = torchrun(*base, "--epochs", "1", "optim.batch_size=32")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("wrote ") == 1  # rank 0 alone reports
    run = tmp_path / "ddp"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["test"]["n"] == 200
    resumed = torchrun(*base, "--epochs", "2", "--resume", "optim.batch_size=32",
                       "imbalance.weighted_sampler=true")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run} after epoch 1" in resumed.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["world_size"] == 2
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt", "confusion_matrix.png", "curves.png", "last.pt",
        "metrics.json", "model_spec.json",
    ]  # fmt: skip


@pytest.mark.slow
def test_torchrun_optimize_fine_tunes_on_two_processes(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "tiny"))
    result = torchrun(
        "-m", "optimize", "--run-dir", str(run), f"repository.path={tmp_path / 'repo'}",
        "max_accuracy_drop=100", "prune.finetune.epochs=1", "quantize.targets=[cpu]",
        "quantize.methods=[minmax]", "bench.rounds=1", "bench.seconds=0.02", "bench.warmup=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "optimize_report.json").read_text())
    assert report["prune"]["finetune"]["world_size"] == 2
    assert (tmp_path / "repo" / "tiny" / "config.pbtxt").is_file()


def test_a_failed_rank_leaves_without_waiting_for_the_others(tmp_path):
    result = torchrun(str(WORKER.with_name("leave_worker.py")), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "rank0").read_text() == "left first"
