"""Run under `torchrun --nproc_per_node=N ddp_worker.py OUT`: train two tiny models with
train.engine.fit and save each rank's weights and history to OUT/rank<r>.pt.

`train_models(reference=True)` in a single process is the comparison: the same models, data
and global batches (a one-replica DistributedSampler draws the permutation the N ranks
share out), so only torch.distributed separates the two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from train import distributed
from train.config import OptimConfig
from train.data import ImageDataset, Split, make_loader
from train.engine import fit

SEED = 0
GLOBAL_BATCH = 16
OPTIM = OptimConfig(
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
    schedule="onecycle", epochs=2, batch_size=GLOBAL_BATCH,
)  # fmt: skip


def dataset(n: int, seed: int) -> ImageDataset:
    """n 8x8 gray images whose class (of 4) is the brightest quadrant."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    quadrants = x.reshape(n, 1, 2, 4, 2, 4).mean(axis=(1, 3, 5)).reshape(n, 4)
    labels = quadrants.argmax(1).tolist()
    return ImageDataset(Split([Path(f"{i}.png") for i in range(n)], labels), None, cache=x)


def model(batchnorm: bool) -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4) if batchnorm else nn.Identity(),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def loaders(reference: bool) -> tuple[DataLoader, DataLoader]:
    train, val = dataset(64, 1), dataset(25, 2)  # 25: the ranks' validation shards differ
    if reference:
        order = DistributedSampler(range(len(train)), 1, 0, shuffle=True, seed=SEED)
        return DataLoader(train, GLOBAL_BATCH, sampler=order), DataLoader(val, 256)
    return (
        make_loader(train, GLOBAL_BATCH, shuffle=True, seed=SEED, shard=True),
        make_loader(val, 256, shuffle=False, seed=SEED, shard=True),
    )


def train_models(reference: bool = False) -> dict:
    """{"plain": ..., "batchnorm": ...}: each model's final weights and fit history."""
    out = {}
    for name in ("plain", "batchnorm"):
        net = model(batchnorm=name == "batchnorm")
        train, val = loaders(reference)
        state = fit(net, train, val, OPTIM, seed=SEED, log=lambda _: None)
        out[name] = {"state_dict": net.state_dict(), "history": state.history}
    return out


if __name__ == "__main__":
    distributed.init()
    result = train_models()
    torch.save(result, Path(sys.argv[1]) / f"rank{distributed.rank()}.pt")
    distributed.shutdown(finished=True)
