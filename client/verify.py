"""Acceptance check: the running server answers as its engine does in process on its model.

    python client/verify.py --run runs/default --repo model_repository [--url 127.0.0.1:8000]

A deterministic sample of the run's test split (train's own data code, so the same split train
and optimize used) is classified three ways:
  raw     image bytes -> the ensemble `<name>` (preprocessing on the server)
  tensor  contract.preprocess here -> the classifier that ensemble ends in
  local   contract.preprocess here -> <repo>/<classifier>/1/model.onnx on the engine its
          config.pbtxt names (ONNX Runtime or OpenVINO, with the served parameters: serve.local)
It passes when every top-1 agrees and the server's scores are within --atol of the local ones;
top-1 accuracy is set beside the optimize report's figure for that variant.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `client` and `contract` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from client.connection import (  # noqa: E402
    DEFAULT_PORTS,
    ClientError,
    ModelInfo,
    Policy,
    Rejected,
    Triton,
)
from client.infer import non_negative, positive  # noqa: E402
from contract import ImageError, ModelSpec, SpecError, load_spec, model_input  # noqa: E402
from contract.atomic import atomic_write_json  # noqa: E402
from contract.spec import DTYPES  # noqa: E402
from serve.local import Local  # noqa: E402
from serve.repository import RepositoryError  # noqa: E402


@dataclass
class Sample:
    root: Path
    split_size: int  # images in the whole test split
    paths: list[Path]  # the sampled images that preprocess cleanly
    labels: np.ndarray
    x: np.ndarray  # preprocessed, (N, C, H, W)
    skipped: list[str]  # sampled files that are not readable images


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python client/verify.py",
        description=__doc__,
        epilog="exit status: 0 pass; 1 predictions disagree, or an error; 2 bad flags",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="trained+optimized run")
    p.add_argument(
        "--repo", type=Path, default=Path("model_repository"), help="the repository served"
    )
    p.add_argument("--url", help="server host:port (default: 127.0.0.1:8000, gRPC :8001)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--limit", type=positive(int), default=1000, help="test images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="chooses the sample (default 0)")
    p.add_argument("--data", type=Path, help="data root (default: the one the run used)")
    p.add_argument("--out", type=Path, help="JSON summary (default: <run>/serve_verify.json)")
    p.add_argument("--atol", type=positive(float), default=1e-3, help="max |score difference|")
    p.add_argument("--batch-size", type=positive(int), default=32)
    p.add_argument("--concurrency", type=positive(int), default=2)
    p.add_argument("--timeout", type=positive(float), default=60.0)
    p.add_argument("--retries", type=non_negative(int), default=3)
    p.add_argument("--backoff", type=non_negative(float), default=0.5)
    args = p.parse_args(argv)
    args.url = args.url or f"127.0.0.1:{DEFAULT_PORTS[args.protocol]}"
    args.out = args.out or args.run / "serve_verify.json"
    return args


def read_report(run: Path) -> dict:
    path = run / "optimize_report.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ClientError(f"{path} not found: run `make optimize` first") from None
    except ValueError as e:
        raise ClientError(f"{path} is not valid JSON: {e}") from None


def _train_config(run: Path):
    """The run's training config: its data root, split fractions and seed decide the test split."""
    from contract.config import ConfigError, from_dict
    from train.checkpoint import CheckpointError, read_checkpoint
    from train.config import TrainConfig

    checkpoint = run / "checkpoint.pt"
    if not checkpoint.is_file():
        return TrainConfig()
    try:
        return from_dict(TrainConfig, read_checkpoint(checkpoint)["config"])
    except (CheckpointError, ConfigError, KeyError, TypeError) as e:
        raise ClientError(f"{checkpoint}: no usable training config ({e})") from None


def test_split(
    run: Path, data: str | Path | None, report: dict, spec: ModelSpec
) -> tuple[Path, list, list]:
    """(root, files, labels) of the run's test split; `data` overrides the folder it came from.
    bench reads the raw path's images from here too."""
    from train.data import DataError, scan_folder

    train_cfg = _train_config(run)
    report_root = (report.get("config") or {}).get("data", {}).get("root")
    root = Path(data or report_root or train_cfg.data.root)
    try:
        scan = scan_folder(replace(train_cfg.data, root=str(root)), train_cfg.seed)
    except DataError as e:
        raise ClientError(str(e)) from None
    if tuple(scan.classes) != spec.labels:
        raise ClientError(f"the classes in {root} differ from the labels in the run's spec")
    split = scan.splits.get("test")
    if split is None or not split.files:
        raise ClientError(f"{root} has no test images")
    return root, split.files, split.labels


def load_sample(args: argparse.Namespace, report: dict, spec: ModelSpec) -> Sample:
    root, files, labels = test_split(args.run, args.data, report, spec)
    chosen = range(len(files))
    if args.limit < len(files):
        chosen = sorted(random.Random(args.seed).sample(chosen, args.limit))
    paths, ys, xs, skipped = [], [], [], []
    for i in tqdm(chosen, desc="preprocess", unit="img", file=sys.stderr, disable=None):
        try:
            xs.append(model_input(files[i], spec))
        except ImageError as e:
            skipped.append(str(e))
            continue
        paths.append(files[i])
        ys.append(labels[i])
    if not paths:
        raise ClientError(f"none of the {len(chosen)} sampled test images is readable")
    return Sample(root, len(files), paths, np.asarray(ys), np.stack(xs), skipped)


def run_local(local: Local, x: np.ndarray, output: str, batch: int) -> np.ndarray:
    """The served batches in process: same engine, same parameters, same kernels and sums."""
    starts = range(0, len(x), batch)
    parts = [
        local(x[i : i + batch])[output]
        for i in tqdm(starts, desc=local.engine, unit="batch", file=sys.stderr, disable=None)
    ]
    return np.concatenate(parts)


def local_model(model_dir: Path) -> Local:
    try:
        return Local(model_dir)
    except RepositoryError as e:
        raise ClientError(f"{e}: --repo must be the repository the server serves") from None


def run_server(
    triton: Triton, model: ModelInfo, batches: list, paths: list[Path], concurrency: int
) -> np.ndarray:
    """Full score rows for every batch, through `model`; any rejection fails the check."""
    tensor, output = model.inputs[0], model.outputs[0]
    datatype = "BYTES" if model.takes_bytes else DTYPES[model.tensor_dtype]

    def infer(i: int) -> np.ndarray:
        request = [triton.input(tensor.name, batches[i], datatype)]
        try:
            result = triton.infer(model.name, request, [triton.output(output.name)])
        except Rejected as e:
            first = sum(len(b) for b in batches[:i])
            where = f"the batch from {paths[first]}"
            raise ClientError(f"'{model.name}' rejected {where}: {e}") from None
        return result.as_numpy(output.name).reshape(len(batches[i]), -1)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        rows = list(
            tqdm(
                pool.map(infer, range(len(batches))),
                total=len(batches),
                desc=model.name,
                unit="batch",
                file=sys.stderr,
                disable=None,
            )
        )
    return np.concatenate(rows)


def variant_row(report: dict, triton_model: str) -> dict | None:
    rows = report.get("variants", [])
    return next((v for v in rows if v.get("triton_model") == triton_model), None)


def compare(scores: dict[str, np.ndarray], y: np.ndarray, atol: float) -> dict:
    top1 = {k: s.argmax(axis=1) for k, s in scores.items()}
    local = scores["local"]
    result = {
        "agreement": {
            "raw_vs_local": int((top1["raw"] == top1["local"]).sum()),
            "tensor_vs_local": int((top1["tensor"] == top1["local"]).sum()),
            "raw_vs_tensor": int((top1["raw"] == top1["tensor"]).sum()),
            "of": len(y),
        },
        "max_abs_diff": {
            "raw_vs_local": float(np.abs(scores["raw"] - local).max()),
            "tensor_vs_local": float(np.abs(scores["tensor"] - local).max()),
        },
        "top1_on_sample": {k: round(float((t == y).mean()), 4) for k, t in top1.items()},
        "atol": atol,
    }
    agree = all(v == len(y) for v in result["agreement"].values())
    result["passed"] = agree and max(result["max_abs_diff"].values()) <= atol
    return result


def _print(summary: dict) -> None:
    a, d, acc = summary["agreement"], summary["max_abs_diff"], summary["top1_on_sample"]
    n = a["of"]
    print(
        f"verify: {summary['ensemble']} -> {summary['classifier']} "
        f"(variant {summary['variant'] or '?'}), {n} of {summary['test_images']} test images "
        f"in {summary['data_root']}"
    )
    print(f"  {'':<22}{'top-1 agrees':>14}{'max |diff|':>12}{'top-1 acc':>11}")
    for key, name in (("raw", "raw (ensemble)"), ("tensor", "tensor (classifier)")):
        agree = f"{a[key + '_vs_local']}/{n}"
        print(f"  {name:<22}{agree:>14}{d[key + '_vs_local']:>12.2e}{acc[key]:>11.4f}")
    print(f"  {'local ' + summary['engine']:<22}{'':>14}{'':>12}{acc['local']:>11.4f}")
    reported = summary["report_top1"]
    if reported is not None:
        label = f"optimize report (all {summary['report_test_images']} test images)"
        print(f"  {label:<48}{reported:>11.4f}")


def verify(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        spec = load_spec(args.run / "model_spec.json")
    except SpecError as e:
        raise ClientError(str(e)) from None
    report = read_report(args.run)
    triton = Triton(args.url, args.protocol, Policy(args.timeout, args.retries, args.backoff))
    try:
        triton.check_server()
        ensemble = triton.model(spec.name)
        if ensemble.platform != "ensemble" or not ensemble.takes_bytes:
            raise ClientError(f"model '{spec.name}' is not an ensemble that takes image bytes")
        classifier = triton.model(ensemble.classifier)
        local = local_model(args.repo / classifier.name)
        # The run's spec (float32) with the classifier's input dtype: pixels or floats.
        sample = load_sample(args, report, replace(spec, dtype=classifier.tensor_dtype))
        batch = min(args.batch_size, ensemble.max_batch_size, classifier.max_batch_size)
        starts = range(0, len(sample.paths), batch)
        encoded = [
            np.array([[p.read_bytes()] for p in sample.paths[i : i + batch]], dtype=np.object_)
            for i in starts
        ]
        tensors = [sample.x[i : i + batch] for i in starts]
        scores = {
            "local": run_local(local, sample.x, classifier.outputs[0].name, batch),
            "raw": run_server(triton, ensemble, encoded, sample.paths, args.concurrency),
            "tensor": run_server(triton, classifier, tensors, sample.paths, args.concurrency),
        }
    finally:
        triton.close()
    row = variant_row(report, classifier.name)
    best = (report.get("best_cpu_variant") or {}).get("triton_model")
    summary = {
        "url": f"{args.protocol}://{args.url}",
        "ensemble": ensemble.name,
        "classifier": classifier.name,
        "variant": row["name"] if row else None,
        "report_best_cpu_model": best,
        "onnx": str(local.path),
        "engine": local.engine,
        "data_root": str(sample.root),
        "test_images": sample.split_size,
        "sampled": len(sample.paths) + len(sample.skipped),
        "seed": args.seed,
        "skipped": sample.skipped,
        **compare(scores, sample.labels, args.atol),
        "report_top1": row["top1"] if row else None,
        "report_test_images": report.get("test_images"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(args.out, summary)
    _print(summary)
    if best and best != classifier.name:
        print(f"note: the ensemble ends in {classifier.name}; the report's best CPU model: {best}")
    if not summary["passed"]:
        print(f"error: the server disagrees with {local.engine}; see {args.out}", file=sys.stderr)
        return 1
    print(f"verify: PASS; summary in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return verify(args)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
