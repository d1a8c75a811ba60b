"""In-process baselines: run bench/test_inprocess.py under pytest-benchmark in a child process.

A child process so each run starts with fresh thread pools and the parent's client/server
state does not share the CPU with it. Cases whose measurement overlapped other processes'
load are re-run (noise guard); the quietest result of each case is kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import noise
from bench.config import InprocessConfig, NoiseConfig
from contract import ModelSpec
from serve.install import with_malloc_env

TEST_FILE = Path(__file__).with_name("test_inprocess.py")


class InprocessError(RuntimeError):
    pass


def cases(
    variants: dict[str, tuple[Path, str]],
    spec: ModelSpec,
    cfg: InprocessConfig,
    checkpoint: Path | None,
    spec_path: Path | None,
) -> list[dict]:
    """Every (artifact, batch, threads) to time, each ONNX variant on its engine (`variants`:
    name -> (model.onnx, engine)); eager FP32 when a checkpoint is given."""
    shape = [spec.channels, spec.height, spec.width]
    out = []
    if checkpoint is not None:
        for batch in cfg.batch_sizes:
            out.append(
                {
                    "id": f"eager_fp32-b{batch}-t{cfg.eager_threads or 'default'}",
                    "kind": "eager",
                    "variant": "eager_fp32",
                    "path": str(checkpoint),
                    "spec_path": str(spec_path),
                    "batch": batch,
                    "threads": cfg.eager_threads,
                    "shape": shape,
                }
            )
    for variant, (path, engine) in variants.items():
        for threads in cfg.threads:
            for batch in cfg.batch_sizes:
                out.append(
                    {
                        "id": f"{variant}-b{batch}-t{threads}",
                        "kind": "onnx",
                        "variant": variant,
                        "engine": engine,
                        "path": str(path),
                        "batch": batch,
                        "threads": threads,
                        "shape": shape,
                        "dtype": spec.dtype,  # the served models' input: pixels or floats
                    }
                )
    return out


def raw_cases(files: list[Path], spec_path: Path) -> list[dict]:
    """The raw path's per-image steps on the same test images the served raw path sends: bare
    Pillow decode, contract.preprocess (decode, mode, resize, normalise) and
    contract.model_input for the served spec (what the server's preprocess model runs: the
    pixels, for a model taking uint8). One call goes through every file: a row's throughput
    is images/s."""
    common = {"files": [str(f) for f in files], "spec_path": str(spec_path),
              "batch": len(files), "threads": 1}  # fmt: skip
    return [
        {"id": f"{kind}-{len(files)}img", "kind": kind, "variant": variant, **common}
        for kind, variant in (
            ("decode", "pillow_decode"),
            ("preprocess", "contract_preprocess"),
            ("model_input", "contract_model_input"),
        )
    ]


def _pytest(case_list: list[dict], cfg: InprocessConfig, workdir: Path, tag: str) -> list[dict]:
    cases_file = workdir / f"inprocess_cases_{tag}.json"
    out_file = workdir / f"inprocess_{tag}.json"
    cases_file.write_text(json.dumps(case_list, indent=1))
    bench_opts = [
        "--benchmark-only", f"--benchmark-json={out_file}",
        f"--benchmark-min-rounds={cfg.min_rounds}", f"--benchmark-max-time={cfg.max_time_s}",
        "--benchmark-warmup=on", f"--benchmark-warmup-iterations={cfg.warmup_iterations}",
        "--benchmark-disable-gc", "--benchmark-sort=name",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", str(TEST_FILE), "-q", "-p", "no:cacheprovider",
           *bench_opts]  # fmt: skip
    # The server's allocator settings here too: the baseline runs as the served model does.
    env = with_malloc_env({**os.environ, "BENCH_INPROCESS_CASES": str(cases_file)})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    (workdir / f"inprocess_{tag}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out_file.is_file():
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise InprocessError(f"pytest-benchmark failed (exit {proc.returncode}): {tail}")
    data = json.loads(out_file.read_text())
    return [_row(b) for b in data["benchmarks"]]


def _row(b: dict) -> dict:
    info, st = b["extra_info"], b["stats"]
    batch = info["batch"]
    return {
        "id": b["param"] if "param" in b else b["name"],
        "variant": info["variant"],
        "kind": info["kind"],
        "batch": batch,
        "threads": info["threads"],
        "median_ms": st["median"] * 1e3,
        "mean_ms": st["mean"] * 1e3,
        "stddev_ms": st["stddev"] * 1e3,
        "rounds": st["rounds"],
        "throughput": batch / st["median"],
        "noise": info["noise"],
    }


def run(
    case_list: list[dict],
    cfg: InprocessConfig,
    guard: NoiseConfig,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Time every case; re-run busy ones up to guard.retries times. Rows in case order."""
    rows = {r["id"]: r for r in _pytest(case_list, cfg, workdir, "0")}
    for attempt in range(1, guard.retries + 1):
        busy = [c for c in case_list if noise.is_busy(rows[c["id"]]["noise"], guard.busy_cores)]
        if not busy:
            break
        log(
            f"  warning: {len(busy)} in-process case(s) ran while other processes were busy "
            f"(> {guard.busy_cores} cores): re-running them"
        )
        for again in _pytest(busy, cfg, workdir, str(attempt)):
            if again["noise"]["other_cores"] < rows[again["id"]]["noise"]["other_cores"]:
                rows[again["id"]] = again
    for r in rows.values():
        r["busy"] = noise.is_busy(r["noise"], guard.busy_cores)
    return [rows[c["id"]] for c in case_list]
