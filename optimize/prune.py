"""Structured channel pruning with torch-pruning (DepGraph), then fine-tuning with train.engine.fit.

Save format: a pruned model is stored as a plain checkpoint (`pruned.pt`: arch, spec and the
pruned state_dict, read with `torch.load(weights_only=True)`). The state_dict's tensor shapes
are the channel plan: `load_pruned` builds the original architecture and shrinks every
Conv/BatchNorm/Linear (a depthwise conv: its groups too) to the recorded shapes before loading
the weights, so nothing is unpickled but tensors (torch-pruning's `tp.save` pickles modules).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn
from tqdm import tqdm

from contract import ModelSpec
from optimize.config import FinetuneConfig, PruneConfig
from train import distributed
from train.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from train.config import OptimConfig
from train.data import ImageDataset, make_loader
from train.engine import fit
from train.models import create_model

PLAN_FORMAT = "channel-plan/1"


def make_importance(name: str) -> tp.importance.Importance:
    return {
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": tp.importance.GroupTaylorImportance,
        "lamp": tp.importance.LAMPImportance,
        "fpgm": tp.importance.FPGMImportance,
        "bn_scale": tp.importance.BNScaleImportance,
        "random": tp.importance.RandomImportance,
    }[name]()


def count(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """(MACs, params) for one image, as torch-pruning counts them."""
    example = torch.zeros(1, spec.channels, spec.height, spec.width)
    macs, params = tp.utils.count_ops_and_params(model.eval(), example)
    return int(macs), int(params)


def _taylor_gradients(model: nn.Module, batches: list) -> None:
    """Fill .grad for Taylor scores; BN in eval mode so scoring does not move its statistics."""
    model.eval()
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss()
    for x, y in batches:
        loss_fn(model(x), y).backward()


def prune_model(model: nn.Module, spec: ModelSpec, cfg: PruneConfig, grad_batches: list) -> dict:
    """Prune `model` in place; returns MACs/params before and after and the step log."""
    macs0, params0 = count(model, spec)
    chase_macs = cfg.macs_reduction is not None
    pruner = tp.pruner.BasePruner(
        model,
        torch.zeros(1, spec.channels, spec.height, spec.width),
        importance=make_importance(cfg.importance),
        global_pruning=cfg.global_pruning,
        pruning_ratio=cfg.max_ratio if chase_macs else cfg.ratio,
        max_pruning_ratio=cfg.max_ratio,
        iterative_steps=cfg.iterative_steps,
        round_to=cfg.round_to,
        ignored_layers=[model.get_classifier()],  # the head keeps one output per class
    )
    steps = []
    for step in tqdm(range(1, cfg.iterative_steps + 1), desc="pruning", unit="step", leave=False):
        if cfg.importance == "taylor":
            _taylor_gradients(model, grad_batches)
        pruner.step()
        macs, params = count(model, spec)
        steps.append({"step": step, "macs": macs, "params": params})
        if chase_macs and macs <= (1 - cfg.macs_reduction) * macs0:
            break
    model.zero_grad(set_to_none=True)
    macs, params = steps[-1]["macs"], steps[-1]["params"]
    if chase_macs and macs > (1 - cfg.macs_reduction) * macs0:
        print(f"note: MACs target not reached within max_ratio {cfg.max_ratio}")
    return {
        "importance": cfg.importance,
        "global_pruning": cfg.global_pruning,
        "target": f"macs_reduction {cfg.macs_reduction}" if chase_macs else f"ratio {cfg.ratio}",
        "macs_before": macs0,
        "macs_after": macs,
        "params_before": params0,
        "params_after": params,
        "macs_reduction": round(1 - macs / macs0, 4),
        "steps": steps,
        "channels": channel_plan(model),
    }


def channel_plan(model: nn.Module) -> dict[str, int]:
    return {
        name: m.out_channels
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    }


def finetune(
    model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: FinetuneConfig, seed: int
) -> dict:
    """Recover accuracy with the train stage's loop; keeps the best validation epoch."""
    if cfg.epochs == 0:
        return {"epochs": 0}
    optim = OptimConfig(
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        schedule=cfg.schedule,
        label_smoothing=cfg.label_smoothing,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
    )
    train_loader = make_loader(train, cfg.batch_size, shuffle=True, seed=seed, shard=True)
    val_loader = make_loader(val, 256, shuffle=False, seed=seed, shard=True)
    best: dict = {}

    def keep_best(state, is_best: bool, _blob: dict) -> None:
        if is_best:
            best.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    start = time.perf_counter()
    state = fit(model, train_loader, val_loader, optim, seed=seed, on_epoch_end=keep_best)
    model.load_state_dict(best)
    return {
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_top1": round(state.best_score, 4),
        "train_images": len(train),
        "world_size": distributed.world_size(),
        "seconds": round(time.perf_counter() - start, 1),
        "history": state.history,
    }


def grad_batches(train: ImageDataset, n: int, seed: int) -> list:
    loader = make_loader(train, 64, shuffle=True, seed=seed)
    return [batch for batch, _ in zip(loader, range(n), strict=False)]


def save_pruned(path: Path, model: nn.Module, spec: ModelSpec) -> Path:
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": PLAN_FORMAT,
        "arch": spec.arch,
        "spec": spec.to_dict(),
        "state_dict": state,
    }
    return save_checkpoint(path, payload)


def _shrink(module: nn.Module, prefix: str, state: dict[str, torch.Tensor]) -> None:
    """Give `module`'s own tensors the recorded shapes and update its size attributes."""
    for name, tensor in [
        *module.named_parameters(recurse=False),
        *module.named_buffers(recurse=False),
    ]:
        want = state.get(prefix + name)
        if want is None or want.shape == tensor.shape:
            continue
        fresh = torch.empty(want.shape, dtype=tensor.dtype)
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(fresh, requires_grad=tensor.requires_grad))
        else:
            module._buffers[name] = fresh
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        if module.groups != 1 and not depthwise:
            raise CheckpointError("the channel plan supports plain and depthwise convolutions")
        module.out_channels = module.weight.shape[0]
        # A depthwise conv keeps one filter per channel: its channels are its groups.
        module.in_channels = module.out_channels if depthwise else module.weight.shape[1]
        module.groups = module.out_channels if depthwise else 1
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = module.running_mean.shape[0]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape


def load_pruned(path: Path, spec: ModelSpec) -> nn.Module:
    """Rebuild a pruned model from `save_pruned`'s file without unpickling any code."""
    blob = read_checkpoint(path)
    if blob.get("format") != PLAN_FORMAT or blob.get("arch") != spec.arch:
        raise CheckpointError(f"{path} is not a {PLAN_FORMAT} checkpoint of {spec.arch}")
    state = blob["state_dict"]
    model = create_model(spec.arch, spec.num_classes, spec.channels)
    for name, module in model.named_modules():
        _shrink(module, f"{name}." if name else "", state)
    try:
        model.load_state_dict(state)
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, spec.channels, spec.height, spec.width))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: channel plan does not fit {spec.arch}: {e}") from None
    if out.shape != (1, spec.num_classes):
        raise CheckpointError(f"{path}: rebuilt model outputs {tuple(out.shape)}")
    return model
