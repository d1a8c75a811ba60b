"""`python -m train`: an ImageFolder in; checkpoint, contract, metrics and plots out."""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract import ModelSpec, SpecError, load_spec, save_spec
from contract.atomic import atomic_write_json
from contract.config import ConfigError, load_config, to_dict
from train import distributed
from train.checkpoint import (
    CheckpointError,
    load_matching,
    read_checkpoint,
    save_checkpoint,
    state_dict_of,
)
from train.config import TrainConfig
from train.data import (
    SPLITS,
    DataError,
    class_counts,
    detect_color_mode,
    load_split,
    make_loader,
    measure_mean_std,
    scan_folder,
)
from train.distributed import DistributedError
from train.engine import FitState, fit, predict
from train.metrics import classification_metrics
from train.models import create_model
from train.models.pretrained import load_pretrained, weights_for
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
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the architecture's packaged ImageNet weights",
    )
    p.add_argument("--init-from", help="checkpoint or state_dict for transfer learning")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the head")
    p.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt")
    p.add_argument("overrides", nargs="*", help="config overrides as key.sub=value")
    return p.parse_intermixed_args(argv)  # overrides may sit between flags


def build_config(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.overrides)
    flag_keys = {
        "data": "data.root",
        "name": "name",
        "arch": "model.arch",
        "epochs": "optim.epochs",
        "init_from": "model.init_from",
    }
    for attr, key in flag_keys.items():
        if getattr(args, attr) is not None:
            overrides.append(f"{key}={getattr(args, attr)}")
    if args.pretrained:
        overrides.append("model.pretrained=true")
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
        name=cfg.name,
        arch=cfg.model.arch,
        labels=tuple(classes),
        height=d.height,
        width=d.width,
        color_mode=mode,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        resize_policy=d.resize_policy,
        resize_scale=d.resize_scale,
    )
    if cfg.model.pretrained:
        w = weights_for(cfg.model.arch)
        mean, std = (w.mean,) * channels, (w.std,) * channels
    elif d.mean is not None and d.std is not None:
        mean, std = tuple(d.mean), tuple(d.std)
    else:
        print("measuring mean/std on the training split ...")
        mean, std = measure_mean_std(train_files, spec)
    return ModelSpec(**{**spec.__dict__, "mean": mean, "std": std}).validate()


def apply_init(model: nn.Module, cfg: TrainConfig, init_blob: dict | None) -> dict | None:
    """Load the starting weights, if any; returns the record kept in the run's JSON files."""
    record = None
    if cfg.model.pretrained:
        record = load_pretrained(model, cfg.model.arch)
        what = f"pretrained {record['weights']} ({record['package']})"
    elif init_blob is not None:
        loaded, fresh, adapted = load_matching(model, state_dict_of(init_blob))
        if not loaded:
            raise CheckpointError(f"{cfg.model.init_from}: no tensor matches {cfg.model.arch}")
        record = {"weights": Path(cfg.model.init_from).name, "tensors_loaded": len(loaded),
                  "tensors_fresh": fresh, "summed_over_rgb": adapted}  # fmt: skip
        what = f"init-from {cfg.model.init_from}"
    if record is not None:
        fresh = record["tensors_fresh"]
        print(
            f"{what}: loaded {record['tensors_loaded']} tensors, kept {len(fresh)} fresh"
            + (f" ({', '.join(fresh[:6])})" if fresh else "")
            + (f", summed over RGB for gray input: {record['summed_over_rgb']}"
               if record["summed_over_rgb"] else "")
        )  # fmt: skip
    if cfg.model.freeze_backbone:
        head = set(map(id, model.get_classifier().parameters()))
        for p in model.parameters():
            p.requires_grad = id(p) in head
        print("backbone frozen: training the classifier head only")
    return record


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
        print(
            f"  {key:<{width}}  {value:.4f}"
            if isinstance(value, float)
            else f"  {key:<{width}}  {value}"
        )


def read_data(cfg: TrainConfig, out: Path) -> tuple[ModelSpec, dict, list]:
    """Scan, split and decode the data once; the spec comes from the run when resuming."""
    scan = scan_folder(cfg.data, cfg.seed)
    counts = ", ".join(f"{k} {len(v.files)}" for k, v in scan.splits.items())
    print(f"data {cfg.data.root}: {len(scan.classes)} classes, {counts}")
    if cfg.resume:
        spec = load_spec(out / "model_spec.json")
        if list(spec.labels) != scan.classes:
            raise DataError(f"cannot resume {out}: the data's classes differ from the run's")
    else:
        spec = build_spec(cfg, scan.classes, scan.splits["train"].files)
    datasets, skipped = {}, []
    for name in SPLITS:
        datasets[name], bad = load_split(scan.splits[name], spec, name, cfg.data.cache_max_mb)
        skipped += bad
    for path, why in skipped:
        print(f"skipped {path}: {why}")
    for name, ds in datasets.items():
        if len(ds) == 0:
            raise DataError(f"the {name} split has no readable images")
    return spec, datasets, skipped


def checkpoint_writer(out: Path, model: nn.Module, cfg: TrainConfig, spec: ModelSpec):
    """checkpoint.pt keeps the best epoch (the deliverable); last.pt what resume needs."""
    base = {"arch": spec.arch, "config": to_dict(cfg), "spec": spec.to_dict()}

    def on_epoch_end(state: FitState, is_best: bool, opt_state: dict) -> None:
        if not distributed.is_main():
            return
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if is_best:
            best = {**base, "state_dict": weights, "epoch": state.epoch}
            save_checkpoint(out / "checkpoint.pt", best)
        last = {**base, "state_dict": weights, "opt_state": opt_state,
                "fit_state": asdict(state)}  # fmt: skip
        save_checkpoint(out / "last.pt", last)

    return on_epoch_end


def run(cfg: TrainConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir) / cfg.name
    init_blob = read_checkpoint(cfg.model.init_from) if cfg.model.init_from else None
    resume_blob = read_checkpoint(out / "last.pt") if cfg.resume else None
    spec, datasets, skipped = read_data(cfg, out)

    model = create_model(spec.arch, spec.num_classes, spec.channels)
    print(f"model {spec.arch}: {sum(p.numel() for p in model.parameters()):,} parameters")
    state, opt_state = FitState(), None
    if resume_blob is not None:
        model.load_state_dict(resume_blob["state_dict"])
        state, opt_state = FitState(**resume_blob["fit_state"]), resume_blob["opt_state"]
        print(f"resuming {out} after epoch {state.epoch}")
    else:
        init = apply_init(model, cfg, init_blob)
        if init is not None:
            spec = replace(spec, extra={**spec.extra, "init": init})

    n_cls = spec.num_classes
    common = {"seed": cfg.seed, "workers": cfg.data.workers, "shard": True}
    loaders = {
        "train": make_loader(
            datasets["train"],
            cfg.optim.batch_size,
            shuffle=True,
            weighted=cfg.imbalance.weighted_sampler,
            num_classes=n_cls,
            **common,
        ),
        "val": make_loader(datasets["val"], 256, shuffle=False, **common),
        "test": make_loader(datasets["test"], 256, shuffle=False, **common),
    }
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_spec(spec, out / "model_spec.json")
    print(f"training {cfg.optim.epochs} epochs, batch {cfg.optim.batch_size}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    start = time.perf_counter()
    state = fit(
        model, loaders["train"], loaders["val"], cfg.optim, augment=cfg.augment,
        early_stop=cfg.early_stop, loss_fn=make_loss(cfg, datasets["train"].labels, n_cls),
        seed=cfg.seed, state=state, opt_state=opt_state,
        on_epoch_end=checkpoint_writer(out, model, cfg, spec),
    )  # fmt: skip
    train_seconds = time.perf_counter() - start
    if resume_blob is not None:
        train_seconds += sum(h["seconds"] for h in resume_blob["fit_state"]["history"])
    distributed.barrier()  # rank 0 has written checkpoint.pt
    model.load_state_dict(read_checkpoint(out / "checkpoint.pt")["state_dict"])
    metrics = evaluate_run(cfg, spec, model, loaders)
    metrics.update(train_seconds=round(train_seconds, 2), epochs_run=state.epoch,
                   best_epoch=state.best_epoch, history=state.history,
                   skipped_files=len(skipped), init=spec.extra.get("init"),
                   world_size=distributed.world_size())  # fmt: skip
    if distributed.is_main():
        write_reports(out, cfg, spec, metrics)
    return metrics


def binary_task(spec: ModelSpec, cfg: TrainConfig) -> tuple[int, float] | None:
    """(positive class index, threshold) for a binary task, None otherwise (optimize scores
    its variants the same way)."""
    if spec.num_classes != 2:
        return None
    return spec.labels.index(cfg.positive_class) if cfg.positive_class else 1, cfg.binary_threshold


def evaluate_run(cfg: TrainConfig, spec: ModelSpec, model: nn.Module, loaders: dict) -> dict:
    positive, threshold = binary_task(spec, cfg) or (None, cfg.binary_threshold)
    metrics = {}
    for name in ("val", "test"):
        logits, labels = predict(model, loaders[name], desc=f"evaluating {name}")
        metrics[name] = classification_metrics(logits, labels, positive, threshold)
    metrics.update(arch=spec.arch, params=sum(p.numel() for p in model.parameters()),
                   labels=list(spec.labels))  # fmt: skip
    return metrics


def write_reports(out: Path, cfg: TrainConfig, spec: ModelSpec, metrics: dict) -> None:
    atomic_write_json(out / "metrics.json", metrics)
    test = metrics["test"]
    plot_confusion(np.array(test["confusion_matrix"]), list(spec.labels),
                   out / "confusion_matrix.png", f"{cfg.name}: test confusion matrix")  # fmt: skip
    plot_curves(metrics["history"], out / "curves.png")
    rows = {k: v for k, v in test.items() if k != "confusion_matrix"}
    rows.update(train_seconds=metrics["train_seconds"], skipped_files=metrics["skipped_files"])
    print_table(f"test metrics ({cfg.name}, best epoch {metrics['best_epoch']})", rows)
    files = "checkpoint.pt model_spec.json metrics.json confusion_matrix.png curves.png"
    print(f"\nwrote {out}/: {files}")


def main(argv: list[str] | None = None) -> int:
    finished = False
    try:
        distributed.init()  # under torchrun; one process: nothing
        run(build_config(parse_args(argv)))
        finished = True
    except (ConfigError, DataError, SpecError, CheckpointError, DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        msg = "interrupted: checkpoint.pt holds the best epoch so far; --resume continues"
        print(msg, file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(finished)
    return 0
