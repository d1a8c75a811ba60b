"""torch.distributed for the training loop: init, samplers, rank-0 guard, a few collectives.

`torchrun --nproc_per_node=N -m train ...` starts N processes and sets WORLD_SIZE, RANK and
LOCAL_RANK; `init()` joins them into one process group (NCCL where CUDA exists, else gloo)
and `fit` wraps the model in DistributedDataParallel. Every helper here is a no-op without a
process group, so a single process trains exactly as it did before this module existed.

Batch sizes stay global: each of N ranks takes batch_size / N, so a run keeps its learning
rate, its schedule and its steps per epoch whatever N is.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class DistributedError(ValueError):
    """A setting that cannot be split over the processes of the group."""


def init() -> None:
    """Join torchrun's process group when there is more than one process; else nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    if rank() != 0:
        # Every rank runs the same steps and would print the same lines: only rank 0 talks
        # (torchvision's references silence print the same way). Errors still reach stderr.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)


def shutdown(finished: bool) -> None:
    """Leave the group. `finished`: this rank's work is done, so it waits for the others first:
    a rank that tore gloo down while another still worked (rank 0 writing reports, optimize's
    rank 0 quantizing) was once aborted ("terminate called without an active exception"). A
    rank that failed leaves at once: its peers may be inside a collective it never reaches,
    and a barrier would hang them all; torchrun ends a group that lost a rank."""
    if active():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 alone writes checkpoints, metrics and plots."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def device() -> torch.device:
    """Where this rank computes: its own GPU under NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_batch(batch_size: int) -> int:
    """This rank's share of a global batch."""
    n = world_size()
    if batch_size % n:
        raise DistributedError(f"batch size {batch_size} does not split over {n} processes")
    return batch_size // n


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around `model` in a group: gradients are averaged over ranks."""
    if not active():
        return model
    ids = [device().index] if device().type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


class WeightedDistributedSampler(Sampler[int]):
    """WeightedRandomSampler over all ranks: one draw per epoch from a generator seeded alike on
    every rank, then rank r takes every N-th index from r, as DistributedSampler does."""

    def __init__(self, weights, num_samples: int, num_replicas: int, rank: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.per_rank = math.ceil(num_samples / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.num_replicas
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        return iter(drawn[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """A contiguous, unpadded slice of an evaluation set: gathered in rank order, the slices
    give back every sample once, in order, so metrics stay exact over the whole split."""

    def __init__(self, num_samples: int, num_replicas: int, rank: int):
        self.start = num_samples * rank // num_replicas
        self.stop = num_samples * (rank + 1) // num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def sampler(n: int, *, train: bool, seed: int, weights=None) -> Sampler:
    """This rank's sampler over a dataset of `n` (weighted: one weight a sample)."""
    if not train:
        return ShardSampler(n, world_size(), rank())
    if weights is not None:
        return WeightedDistributedSampler(weights, n, world_size(), rank(), seed)
    return DistributedSampler(range(n), world_size(), rank(), shuffle=True, seed=seed)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Distributed samplers reshuffle per epoch only when told which epoch it is."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm statistics to every rank (each rank's last batch moved its own)."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_sum(*values: float) -> list[float]:
    """Each value summed over the ranks."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def gather(array: np.ndarray) -> np.ndarray:
    """Every rank's shard of an evaluation, concatenated in rank order."""
    if not active():
        return array
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)
