"""The training loop, shared by the train stage and optimize's post-pruning fine-tune."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from train import distributed
from train.config import AugmentConfig, EarlyStopConfig, OptimConfig
from train.metrics import classification_metrics


@dataclass
class FitState:
    """What resume needs besides the weights; plain types so it saves with weights_only."""

    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The head at `lr`; with backbone_lr_scale < 1 the pretrained rest moves more slowly."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.backbone_lr_scale == 1.0:
        return [{"params": params, "lr": cfg.lr}]
    head = set(map(id, model.get_classifier().parameters()))
    return [
        {"params": [p for p in params if id(p) in head], "lr": cfg.lr},
        {"params": [p for p in params if id(p) not in head], "lr": cfg.lr * cfg.backbone_lr_scale},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """Returns (scheduler or None, True when it steps per batch rather than per epoch)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        # OneCycleLR divides by the warm-up length in steps: keep it >= 2 on tiny runs.
        pct = min(max(cfg.warmup_fraction, 2.5 / total), 0.5)
        peaks = [group["lr"] for group in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=peaks, total_steps=max(total, 5), pct_start=pct
        ), True
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=1), False
    return None, False


def restore_schedule(scheduler, per_batch: bool, opt_state: dict, steps_done: int) -> None:
    """Per-batch schedules are replayed to the step reached, so a resume may change epochs."""
    if scheduler is None:
        return
    if not per_batch:
        scheduler.load_state_dict(opt_state["scheduler"])
        return
    with warnings.catch_warnings():  # replaying steps without optimizer steps is the point
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps_done):
            scheduler.step()


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Flip, pad-and-crop, rotate on already-normalized tensors (cheap, batched)."""
    n = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.random_crop_padding > 0:
        p = cfg.random_crop_padding
        padded = nn.functional.pad(x, (p, p, p, p), mode="replicate")
        dx, dy = torch.randint(0, 2 * p + 1, (2,), generator=gen).tolist()
        x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    if cfg.rotation_degrees > 0:
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.rotation_degrees)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack(
            [
                torch.stack([cos, -sin, torch.zeros(n)], 1),
                torch.stack([sin, cos, torch.zeros(n)], 1),
            ],
            1,
        )
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return x


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, desc: str = "eval") -> tuple:
    """Logits and labels for a whole loader, in eval mode (all ranks' shards, in order)."""
    model.eval()
    logits, labels = [], []
    quiet = not distributed.is_main()
    for x, y in tqdm(loader, desc=desc, unit="batch", leave=False, disable=quiet):
        x = x.to(distributed.device()).contiguous(memory_format=torch.channels_last)
        logits.append(model(x).float().cpu().numpy())
        labels.append(y.numpy())
    return distributed.gather(np.concatenate(logits)), distributed.gather(np.concatenate(labels))


def evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, desc: str = "eval") -> dict:
    logits, labels = predict(model, loader, desc)
    metrics = classification_metrics(logits, labels)
    metrics["loss"] = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(labels)))
    return metrics


def train_one_epoch(
    model,
    loader,
    opt,
    scheduler,
    per_batch: bool,
    loss_fn,
    augment: AugmentConfig,
    gen: torch.Generator,
    desc: str,
) -> float:
    model.train()
    total, count = 0.0, 0
    dev = distributed.device()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not distributed.is_main())
    for x, y in bar:
        if augment.enabled:
            x = augment_batch(x, augment, gen)
        x, y = x.to(dev).contiguous(memory_format=torch.channels_last), y.to(dev)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if per_batch and scheduler is not None:
            scheduler.step()
        total += loss.item() * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    total, count = distributed.all_sum(total, count)
    return total / max(count, 1)


def score_of(metrics: dict, metric: str) -> float:
    return -metrics["loss"] if metric == "loss" else metrics[metric]


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optim_cfg: OptimConfig,
    *,
    augment: AugmentConfig | None = None,
    early_stop: EarlyStopConfig | None = None,
    loss_fn: nn.Module | None = None,
    seed: int = 0,
    state: FitState | None = None,
    opt_state: dict | None = None,
    on_epoch_end: Callable[[FitState, bool, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> FitState:
    """Train for optim_cfg.epochs; `on_epoch_end(state, is_best, resume_blob)` saves.

    Under torchrun every rank calls fit alike: the model trains wrapped in
    DistributedDataParallel and evaluates unwrapped on its shard (see train.distributed).
    """
    augment = augment or AugmentConfig()
    early_stop = early_stop or EarlyStopConfig()
    loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=optim_cfg.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()
    state = state or FitState()
    model.to(distributed.device(), memory_format=torch.channels_last)
    loss_fn.to(distributed.device())
    net = distributed.wrap(model)
    opt = build_optimizer(model, optim_cfg)
    scheduler, per_batch = build_scheduler(opt, optim_cfg, len(train_loader))
    if opt_state:
        opt.load_state_dict(opt_state["optimizer"])
        restore_schedule(scheduler, per_batch, opt_state, state.epoch * len(train_loader))
    # Each rank augments its own samples with its own draws; one process: seed + epoch.
    gen = torch.Generator().manual_seed(
        (seed + state.epoch) * distributed.world_size() + distributed.rank()
    )
    for epoch in range(state.epoch + 1, optim_cfg.epochs + 1):
        start = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        desc = f"epoch {epoch}/{optim_cfg.epochs}"
        distributed.set_epoch(train_loader, epoch)
        train_loss = train_one_epoch(
            net, train_loader, opt, scheduler, per_batch, loss_fn, augment, gen, desc
        )
        distributed.sync_buffers(model)
        val = evaluate(model, val_loader, eval_loss, desc="validating")
        score = score_of(val, early_stop.metric)
        if scheduler is not None and not per_batch:
            scheduler.step(score)
        seconds = time.perf_counter() - start
        is_best = score > state.best_score
        if is_best:
            state.best_score, state.best_epoch = score, epoch
        state.epoch = epoch
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "val_top1": val["top1"],
                "val_macro_f1": val["macro_f1"],
                "lr": lr,
                "seconds": seconds,
            }
        )
        log(
            f"epoch {epoch:>3}/{optim_cfg.epochs}  train_loss {train_loss:.4f}  "
            f"val_loss {val['loss']:.4f}  val_top1 {val['top1']:.4f}  "
            f"val_f1 {val['macro_f1']:.4f}  lr {lr:.2e}  {seconds:.1f}s"
            + ("  *" if is_best else "")
        )
        if on_epoch_end is not None:
            blob = {
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
            }
            on_epoch_end(state, is_best, blob)
        if early_stop.patience and epoch - state.best_epoch >= early_stop.patience:
            log(f"early stop: no {early_stop.metric} gain for {early_stop.patience} epochs")
            break
    return state
