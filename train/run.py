"""`python -m train`: ImageFolder -> runs/<name>/{checkpoint.pt, model_spec.json, metrics.json, PNGs}."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract import ModelSpec, SpecError, load_spec, save_spec
from contract.atomic import atomic_write_json
from contract.config import ConfigError, load_config, to_dict
from train.checkpoint import (
    CheckpointError,
    load_matching,
    read_checkpoint,
    save_checkpoint,
    state_dict_of,
)
from train.config import TrainConfig
from train.data import (
    DataError,
    class_counts,
    detect_color_mode,
    load_split,
    make_loader,
    measure_mean_std,
    scan_folder,
)
from train.engine import FitState, evaluate, fit, predict
from train.metrics import classification_metrics
from train.models import create_model
from train.plots import plot_confusion, plot_curves


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train an image classifier on an ImageFolder and write its contract.",
    )
    p.add_argument("--config", default="configs/default.yaml", help="YAML config file")
    p.add_argument("--data", help="ImageFolder root (overrides data.root)")
    p.add_argument("--name", help="run name: outputs go to runs/<name>/")
    p.add_argument("--arch", help="model architecture (overrides model.arch)")
    p.add_argument("--epochs", type=int, help="overrides optim.epochs")
    p.add_argument("--init-from", help="checkpoint or state_dict for transfer learning")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the head")
    p.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt")
    p.add_argument("overrides", nargs="*", help="config overrides as key.sub=value")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.overrides)
    flag_keys = {
        "data": "data.root", "name": "name", "arch": "model.arch", "epochs": "optim.epochs",
        "init_from": "model.init_from",
    }
    for attr, key in flag_keys.items():
        if getattr(args, attr) is not None:
            overrides.append(f"{key}={getattr(args, attr)}")
    if args.freeze_backbone:
        overrides.append("model.freeze_backbone=true")
    if args.resume:
        overrides.append("resume=true")
    return load_config(TrainConfig, args.config, overrides).validate()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_spec(cfg: TrainConfig, classes: list[str], train_files: list[Path]) -> ModelSpec:
    d = cfg.data
    mode = detect_color_mode(train_files) if d.color_mode == "auto" else d.color_mode
    channels = 1 if mode == "L" else 3
    spec = ModelSpec(
        name=cfg.name, arch=cfg.model.arch, labels=tuple(classes), height=d.height,
        width=d.width, color_mode=mode, mean=(0.0,) * channels, std=(1.0,) * channels,
        resize_policy=d.resize_policy, resize_scale=d.resize_scale,
    )
    if d.mean is not None and d.std is not None:
        mean, std = tuple(d.mean), tuple(d.std)
    else:
        print("measuring mean/std on the training split ...")
        mean, std = measure_mean_std(train_files, spec)
    return ModelSpec(**{**spec.__dict__, "mean": mean, "std": std}).validate()


def apply_init(model: nn.Module, cfg: TrainConfig) -> None:
    if cfg.model.init_from:
        loaded, skipped = load_matching(model, state_dict_of(read_checkpoint(cfg.model.init_from)))
        print(
            f"init-from {cfg.model.init_from}: loaded {len(loaded)} tensors, "
            f"kept {len(skipped)} fresh" + (f" ({', '.join(skipped[:6])}...)" if skipped else "")
        )
        if not loaded:
            raise CheckpointError(f"{cfg.model.init_from}: no tensor matches {cfg.model.arch}")
    if cfg.model.freeze_backbone:
        head = set(map(id, model.get_classifier().parameters()))
        for p in model.parameters():
            p.requires_grad = id(p) in head
        print("backbone frozen: training the classifier head only")


def make_loss(cfg: TrainConfig, train_labels: list[int], num_classes: int) -> nn.Module:
    weight = None
    if cfg.imbalance.class_weighted_loss:
        counts = class_counts(train_labels, num_classes)
        w = counts.sum() / np.maximum(counts, 1) / num_classes
        weight = torch.tensor(w, dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.optim.label_smoothing)


def print_table(title: str, rows: dict[str, float]) -> None:
    print(f"\n{title}")
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


def run(cfg: TrainConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir) / cfg.name
    scan = scan_folder(cfg.data, cfg.seed)
    splits = scan.splits
    print(
        f"data {cfg.data.root}: {len(scan.classes)} classes, "
        + ", ".join(f"{k} {len(v.files)}" for k, v in splits.items())
    )
    resume_blob = None
    if cfg.resume:
        resume_blob = read_checkpoint(out / "last.pt")
        spec = load_spec(out / "model_spec.json")
        if list(spec.labels) != scan.classes:
            raise DataError(f"cannot resume {out}: the data's classes differ from the run's")
    else:
        spec = build_spec(cfg, scan.classes, splits["train"].files)
    datasets, skipped = {}, []
    for name in ("train", "val", "test"):
        datasets[name], bad = load_split(splits[name], spec, name, cfg.data.cache_max_mb)
        skipped += bad
    for path, why in skipped:
        print(f"skipped {path}: {why}")
    for name, ds in datasets.items():
        if len(ds) == 0:
            raise DataError(f"the {name} split has no readable images")

    model = create_model(spec.arch, spec.num_classes, spec.channels)
    print(f"model {spec.arch}: {sum(p.numel() for p in model.parameters()):,} parameters")
    state, opt_state = FitState(), None
    if resume_blob is not None:
        model.load_state_dict(resume_blob["state_dict"])
        state = FitState(**resume_blob["fit_state"])
        opt_state = resume_blob["opt_state"]
        print(f"resuming {out} after epoch {state.epoch}")
    else:
        apply_init(model, cfg)
    bs, workers = cfg.optim.batch_size, cfg.data.workers
    train_loader = make_loader(
        datasets["train"], bs, True, workers, cfg.seed, cfg.imbalance.weighted_sampler,
        spec.num_classes,
    )
    val_loader = make_loader(datasets["val"], 256, False, workers, cfg.seed)
    test_loader = make_loader(datasets["test"], 256, False, workers, cfg.seed)
    loss_fn = make_loss(cfg, datasets["train"].labels, spec.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    save_spec(spec, out / "model_spec.json")
    base = {"arch": spec.arch, "config": to_dict(cfg), "spec": spec.to_dict()}
    train_seconds = sum(h["seconds"] for h in state.history)

    def on_epoch_end(st: FitState, is_best: bool, blob: dict) -> None:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if is_best:
            save_checkpoint(out / "checkpoint.pt", {**base, "state_dict": weights, "epoch": st.epoch})
        fit_state = {"epoch": st.epoch, "best_score": st.best_score,
                     "best_epoch": st.best_epoch, "history": st.history}
        save_checkpoint(out / "last.pt", {**base, "state_dict": weights, "opt_state": blob,
                                          "fit_state": fit_state})

    start = time.perf_counter()
    print(f"training {cfg.optim.epochs} epochs, batch {bs}, {torch.get_num_threads()} threads")
    state = fit(
        model, train_loader, val_loader, cfg.optim, augment=cfg.augment,
        early_stop=cfg.early_stop, loss_fn=loss_fn, seed=cfg.seed, state=state,
        opt_state=opt_state, on_epoch_end=on_epoch_end,
    )
    train_seconds += time.perf_counter() - start
    best = read_checkpoint(out / "checkpoint.pt")
    model.load_state_dict(best["state_dict"])
    return write_reports(cfg, spec, model, state, val_loader, test_loader, skipped, train_seconds, out)


def write_reports(cfg, spec, model, state, val_loader, test_loader, skipped, train_seconds, out):
    positive = None
    if spec.num_classes == 2:
        positive = spec.labels.index(cfg.positive_class) if cfg.positive_class else 1
    results = {}
    for name, loader in (("val", val_loader), ("test", test_loader)):
        logits, labels = predict(model, loader, desc=f"evaluating {name}")
        results[name] = classification_metrics(logits, labels, positive, cfg.binary_threshold)
    results["val"]["loss"] = evaluate(model, val_loader, nn.CrossEntropyLoss())["loss"]
    metrics = {
        **results,
        "train_seconds": round(train_seconds, 2),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "skipped_files": len(skipped),
        "params": sum(p.numel() for p in model.parameters()),
        "arch": spec.arch,
        "labels": list(spec.labels),
    }
    atomic_write_json(out / "metrics.json", metrics)
    plot_confusion(np.array(results["test"]["confusion_matrix"]), list(spec.labels),
                   out / "confusion_matrix.png", f"{cfg.name}: test confusion matrix")
    plot_curves(state.history, out / "curves.png")
    rows = {k: v for k, v in results["test"].items() if k not in ("confusion_matrix",)}
    rows.update({"train_seconds": metrics["train_seconds"], "skipped_files": len(skipped)})
    print_table(f"test metrics ({cfg.name}, best epoch {state.best_epoch})", rows)
    print(f"\nwrote {out}/: checkpoint.pt model_spec.json metrics.json confusion_matrix.png curves.png")
    return metrics


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = build_config(parse_args(argv))
        run(cfg)
    except (ConfigError, DataError, SpecError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: checkpoint.pt holds the best epoch so far; --resume continues",
              file=sys.stderr)
        return 130
    return 0
