"""`python -m optimize --run runs/<name>`: export, prune, quantize, gate, time, deploy, report.

Everything is checked before anything is written. Artifacts are built in a staged
`runs/<name>/optimize/` and a staged model repository, each swapped in only on success.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from contract import ModelSpec, SpecError, load_spec
from contract.atomic import staged_dir
from contract.config import ConfigError, from_dict, load_config, to_dict
from optimize import prune as pruning
from optimize.config import OptimizeConfig, OptimizeError
from optimize.data import OptimizeData, load_data
from optimize.evaluate import accuracy, benchmark, runner
from optimize.export import add_probabilities, export_onnx, parity, pixels_parity, take_pixels
from optimize.fallback import layer_precisions
from optimize.quantize import Calibration, preprocess, quantize_best
from optimize.report import print_summary, write_reports
from optimize.repository import RepoModel, write_repository
from optimize.tensorrt import try_build
from optimize.variants import (
    Variant,
    best_cpu,
    choose_engines,
    gate,
    int8_name,
    rows,
    timing_key,
)
from train import distributed
from train.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from train.config import TrainConfig
from train.run import binary_task

STEPS = 8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m optimize",
        description="Prune, quantize and package a trained run as a Triton model repository.",
    )
    # --run-dir: under torchrun, whose own parser reads `--run` as its ambiguous `--run-path`.
    p.add_argument(
        "--run", "--run-dir", required=True, type=Path, help="run folder of the train stage"
    )
    p.add_argument("--config", default="configs/optimize.yaml", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="config overrides as key.sub=value")
    return p.parse_args(argv)


@contextlib.contextmanager
def step(seconds: dict, key: str, number: int, text: str) -> Iterator[None]:
    """Announce a step and record its wall time under `key`."""
    print(f"\n[{number}/{STEPS}] {text}", flush=True)
    start = time.perf_counter()
    yield
    seconds[key] = round(time.perf_counter() - start, 1)


def load_run(run_dir: Path) -> tuple[ModelSpec, nn.Module, TrainConfig]:
    """Spec, FP32 model and training config, cross-checked; raises on any mismatch."""
    if not run_dir.is_dir():
        raise OptimizeError(f"run folder not found: {run_dir}")
    spec = load_spec(run_dir / "model_spec.json")
    blob = read_checkpoint(run_dir / "checkpoint.pt")
    recorded, current = blob.get("spec"), spec.to_dict()
    if isinstance(recorded, dict):  # compared with defaults filled in: specs gain keys
        recorded = {**current, **recorded}
        keys = sorted(k for k in current if recorded.get(k) != current.get(k))
        if keys:
            raise OptimizeError(f"model_spec.json does not match the checkpoint (differs: {keys})")
    model = model_from_checkpoint(blob, spec)
    try:
        train_cfg = from_dict(TrainConfig, blob["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"checkpoint lacks a usable training config: {e}") from None
    return spec, model, train_cfg


def export_checked(model, spec, path: Path, data: OptimizeData, cfg: OptimizeConfig) -> float:
    export_onnx(model, spec, path, cfg.export.opset)
    diff = parity(model, path, spec, data.selection.x[:64], cfg.export.tolerance)
    print(f"  {path.name}: checker passed, max |ORT - PyTorch| {diff:.1e}")
    return diff


def prune_and_finetune(model, spec, data: OptimizeData, cfg: OptimizeConfig, work: Path):
    """Returns the pruned model reloaded from its saved form, and the pruning record."""
    pruned = copy.deepcopy(model)  # torch-pruning edits modules in place
    taylor = cfg.prune.importance == "taylor"
    grads = pruning.grad_batches(data.train, cfg.prune.taylor_batches, cfg.seed) if taylor else []
    record = pruning.prune_model(pruned, spec, cfg.prune, grads)
    print(
        f"  MACs {record['macs_before']:,} -> {record['macs_after']:,} "
        f"(-{record['macs_reduction']:.1%}), params {record['params_before']:,} -> "
        f"{record['params_after']:,}"
    )
    ft = cfg.prune.finetune
    print(f"  fine-tuning {ft.epochs} epochs on {len(data.train)} training images")
    record["finetune"] = pruning.finetune(pruned, data.train, data.val, ft, cfg.seed)
    saved = pruning.save_pruned(work / "pruned.pt", pruned, spec)
    record["save_format"] = pruning.PLAN_FORMAT
    # Everything downstream uses the reloaded model, so every run proves the format.
    return pruning.load_pruned(saved, spec), record


def quantize_variants(models: dict, work: Path, data: OptimizeData, spec, cfg: OptimizeConfig):
    """FP32 variants plus one INT8 variant per model and target; returns (variants, choices)."""
    variants = [Variant(n, "cpu", "fp32", n == "pruned", work / f"model_{n}.onnx") for n in models]
    choices = {}
    for source in models:
        fp32 = work / f"model_{source}.onnx"
        cal = Calibration(preprocess(fp32, work / f"model_{source}.pre.onnx"), data.calibration,
                          spec.input_name, work)  # fmt: skip
        fp32_val = accuracy(runner(fp32, cfg.threads), data.selection.x, data.selection.y)
        for target in cfg.quantize.targets:
            name = int8_name(source, target)
            out = work / f"model_{name}.onnx"
            choices[name] = quantize_best(
                cal, out, target, data.selection, fp32_val["top1"], cfg.max_accuracy_drop,
                cfg.quantize, cfg.threads, cfg.bench.threads,
            )  # fmt: skip
            variants.append(Variant(name, target, "int8", source == "pruned", out))
        for leftover in [cal.pre, *work.glob(f"{cal.pre.stem}.*.calibration.json")]:
            leftover.unlink()
    return variants, choices


def evaluate_variants(
    variants: list[Variant], data: OptimizeData, threads: int, binary: tuple | None = None
) -> dict:
    """Test-split accuracy of every variant on every engine that may serve it (threads change
    only the speed, not the answers)."""
    results: dict[str, dict] = {}
    for v in variants:
        for engine in v.engines:
            run = runner(v.path, threads, engine)
            acc = accuracy(run, data.test.x, data.test.y, f"{v.name} ({engine})", binary)
            results.setdefault(v.name, {})[engine] = acc
            print(f"  {v.name:<16} {engine:<12} top-1 {acc['top1']:.4f}")
    return results


def time_variants(variants: list[Variant], data: OptimizeData, cfg: OptimizeConfig) -> dict:
    runs = {timing_key(v.name, e): runner(v.path, cfg.bench.threads, e)
            for v in variants for e in v.engines}  # fmt: skip
    return benchmark(runs, data.test.x, cfg.bench)


def serve_input(variants: list[Variant], served: ModelSpec, work: Path) -> float:
    """Make every variant take the served spec's input (uint8: optimize.export.take_pixels),
    checked against its float self; returns the largest output difference (0 for float32)."""
    if served.dtype == "float32":
        return 0.0
    worst = 0.0
    for v in variants:
        before = work / f"{v.path.stem}.float.onnx"
        shutil.copyfile(v.path, before)
        take_pixels(v.path, served)
        worst = max(worst, pixels_parity(before, v.path, served))
        before.unlink()
    print(f"  every variant takes uint8 pixels; max |difference| vs float input {worst:.1e}")
    if worst > 1e-5:
        raise OptimizeError(f"normalising inside the model changed its outputs by {worst:.2e}")
    return worst


def tensorrt_plan(variants, results, work: Path, cfg: OptimizeConfig) -> tuple[Path | None, str]:
    """Build the plan for the deployed TensorRT variant where possible; (plan, status)."""
    trt = next(
        (v for v in variants if v.target == "tensorrt" and results[v.name]["deployed"]), None
    )
    if trt is None or not cfg.tensorrt.enabled:
        status = "disabled in the config" if trt else "no tensorrt-target variant is deployed"
        print(f"TensorRT: {status}")
        return None, status
    repo = cfg.repository
    plan = work / "model.plan"
    # The profile's opt batch by docker/entrypoint.sh's rule (trt_batch_args), which rebuilds
    # plans on GPU hosts: the largest preferred batch size, else max_batch_size.
    opt = max(repo.preferred_batch_size, default=repo.max_batch_size)
    built = try_build(trt.path, plan, 1, opt, repo.max_batch_size, cfg.tensorrt.workspace_mb)
    if not built["built"]:
        return None, f"skipped: {built['reason']}"
    return plan, f"plan built from {trt.name}"


def deploy(variants, report_rows, plan, spec, cfg: OptimizeConfig) -> list[str]:
    models = [
        RepoModel(r["triton_model"], v.path, v.target == "tensorrt",
                  plan if v.target == "tensorrt" else None, r["engine"])
        for v, r in zip(variants, report_rows, strict=True)
        if r["deployed"]
    ]  # fmt: skip
    best = best_cpu(report_rows)
    repo = cfg.repository
    names = write_repository(
        Path(repo.path), models, spec, repo, best["triton_model"] if best else None
    )
    print(f"  wrote {repo.path}/: {', '.join(names)}")
    return names


def run(run_dir: Path, cfg: OptimizeConfig) -> dict:
    started = time.perf_counter()
    spec, model, train_cfg = load_run(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    seconds: dict[str, float] = {}
    with step(seconds, "data", 1, "reading data"):
        data = load_data(train_cfg, spec, cfg)
        print(
            f"  train subset {len(data.train)}, calibration {len(data.calibration)}, "
            f"selection {len(data.selection.y)}, test {len(data.test.y)}"
        )
    if not distributed.is_main():  # under torchrun, ranks > 0 only share the fine-tune
        if cfg.prune.enabled:
            with tempfile.TemporaryDirectory() as scratch:
                prune_and_finetune(model, spec, data, cfg, Path(scratch))
        return {}
    with staged_dir(run_dir / "optimize") as work:
        with step(seconds, "export", 2, f"exporting FP32 ONNX (opset {cfg.export.opset})"):
            models = {"fp32": model}
            diffs = {"fp32": export_checked(model, spec, work / "model_fp32.onnx", data, cfg)}
        prune_record = None
        with step(seconds, "prune", 3, f"pruning and fine-tuning (enabled: {cfg.prune.enabled})"):
            if cfg.prune.enabled:
                models["pruned"], prune_record = prune_and_finetune(model, spec, data, cfg, work)
                prune_record["saved_as"] = str(run_dir / "optimize" / "pruned.pt")
                path = work / "model_pruned.onnx"
                diffs["pruned"] = export_checked(models["pruned"], spec, path, data, cfg)
        with step(seconds, "quantize", 4, f"INT8 quantization for {cfg.quantize.targets}"):
            variants, calibration = quantize_variants(models, work, data, spec, cfg)
            for v in variants:
                add_probabilities(v.path, spec)
        with step(seconds, "evaluate", 5, f"evaluating on {len(data.test.y)} test images"):
            results = evaluate_variants(variants, data, cfg.threads, binary_task(spec, train_cfg))
            gate(variants, results, cfg.max_accuracy_drop, spec, tuple(cfg.repository.engines))
        with step(seconds, "benchmark", 6, f"timing ({cfg.bench.threads} thread(s) an engine)"):
            timings = time_variants(variants, data, cfg)
            choose_engines(variants, results, timings)
        served = replace(spec, dtype=cfg.export.served_input)
        with step(seconds, "tensorrt", 7, f"{served.dtype} input, TensorRT engine"):
            input_diff = serve_input(variants, served, work)
            plan, tensorrt = tensorrt_plan(variants, results, work, cfg)
        with step(seconds, "repository", 8, f"model repository {cfg.repository.path}, reports"):
            counts = {name: pruning.count(m, spec) for name, m in models.items()}
            report_rows = rows(variants, results, timings, counts)
            names = deploy(variants, report_rows, plan, served, cfg)
        seconds["total"] = round(time.perf_counter() - started, 1)
        report = {
            "model": spec.name,
            "run": str(run_dir),
            "test_images": len(data.test.y),
            "max_accuracy_drop": cfg.max_accuracy_drop,
            "variants": report_rows,
            "best_cpu_variant": best_cpu(report_rows),
            "bench": {"threads": cfg.bench.threads, "inter_op_threads": 1,
                      "rounds": cfg.bench.rounds, "seconds": cfg.bench.seconds},
            "export": {"opset": cfg.export.opset, "max_abs_diff": diffs},
            "served_input": {"dtype": served.dtype, "max_abs_diff": input_diff},
            "prune": prune_record,
            "calibration": calibration,
            "layers": {v.name: layer_precisions(v.path) for v in variants
                       if v.precision == "int8"},
            "calibration_images": len(data.calibration),
            "tensorrt": tensorrt,
            "repository": {"path": cfg.repository.path, "models": names},
            "artifacts": str(run_dir / "optimize"),
            "seconds": seconds,
            "config": to_dict(cfg),
        }  # fmt: skip
        written = write_reports(run_dir, report)
    print_summary(report, written)
    return report


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # so a `kill` also removes the staged directories


def main(argv: list[str] | None = None) -> int:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    finished = False
    try:
        distributed.init()  # `torchrun -m optimize`: the fine-tune runs on every process
        args = parse_args(argv)
        cfg = load_config(OptimizeConfig, args.config, args.overrides).validate()
        run(args.run, cfg)
        finished = True
    except (ConfigError, SpecError, CheckpointError, OptimizeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the previous outputs are untouched", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(finished)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
