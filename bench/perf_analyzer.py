"""NVIDIA's perf_analyzer on the same model and point: a cross-check of our numbers.

The binary comes from `scripts/setup_bench.sh` (tritonclient[all] 2.49.0's wheel, with
libcudart from nvidia-cuda-runtime-cu12 on LD_LIBRARY_PATH through its wrapper script).
"""

from __future__ import annotations

import csv
import resource
import subprocess
import time
from pathlib import Path

from bench.config import PerfAnalyzerConfig
from contract import ModelSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]
UNSTABLE_EXIT = 2  # "Failed to obtain stable measurement"
RELAXED_STABILITY = 1000  # percent: any three windows pass


class PerfAnalyzerError(RuntimeError):
    pass


def binary(cfg: PerfAnalyzerConfig) -> Path:
    path = Path(cfg.binary)
    if not path.is_absolute():  # relative to the project, where setup_bench.sh puts it
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise PerfAnalyzerError(f"{path} not found: run `make setup-bench`")
    return path


def command(
    cfg: PerfAnalyzerConfig,
    url: str,
    protocol: str,
    model: str,
    spec: ModelSpec,
    concurrency: int,
    batch: int,
    csv_path: Path,
    input_data: Path | None = None,
) -> list[str]:
    """`input_data`: a JSON file of real inputs (the raw path's encoded images, see
    bench.images); without it, zeros of the spec's tensor shape."""
    shape = f"{spec.input_name}:{spec.channels},{spec.height},{spec.width}"
    window = ["--measurement-interval", str(cfg.measurement_ms),
              "--stability-percentage", str(cfg.stability_percentage),
              "--max-trials", str(cfg.max_trials)]  # fmt: skip
    load = ["-b", str(batch), "--concurrency-range", f"{concurrency}:{concurrency}"]
    # Zeros, not "random": random FP32 bit patterns include NaN/Inf, which the backend
    # refuses; a conv net's cost does not depend on the values.
    data = ["--shape", shape, "--input-data", "zero"]
    if input_data is not None:
        data = ["--input-data", str(input_data)]
    return [str(binary(cfg)), "-m", model, "-u", url, "-i", protocol, *load, *window, *data,
            "-f", str(csv_path)]  # fmt: skip


def parse_csv(path: Path) -> dict:
    """perf_analyzer's -f report: one row per concurrency, latencies in microseconds."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PerfAnalyzerError(f"{path}: no measurement rows")
    row = rows[-1]

    def ms(key: str) -> float | None:
        return float(row[key]) / 1e3 if row.get(key) not in (None, "") else None

    return {
        "concurrency": int(float(row["Concurrency"])),
        "images_per_s": float(row["Inferences/Second"]),  # requests x batch
        "p50_ms": ms("p50 latency"),
        "p90_ms": ms("p90 latency"),
        "p95_ms": ms("p95 latency"),
        "p99_ms": ms("p99 latency"),
        "mean_ms": ms("Avg latency"),
        "queue_ms": ms("Server Queue"),
        "compute_infer_ms": ms("Server Compute Infer"),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _attempt(
    cmd: list[str], timeout: float, log: Path
) -> tuple[subprocess.CompletedProcess, float]:
    """(the finished run, the CPU cores it used on average): on 2 shared cores a client's CPU
    is taken from the server, which explains differences between load generators."""
    cpu0, t0 = _children_cpu_s(), time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PerfAnalyzerError(f"perf_analyzer did not finish in {timeout:.0f}s") from None
    cores = (_children_cpu_s() - cpu0) / max(time.monotonic() - t0, 1e-9)
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr + "\n")
    return proc, cores


def run(
    cfg: PerfAnalyzerConfig,
    url: str,
    protocol: str,
    model: str,
    spec: ModelSpec,
    concurrency: int,
    batch: int,
    workdir: Path,
    input_data: Path | None = None,
) -> dict:
    """One perf_analyzer point: `concurrency` requests of `batch` images each in flight.

    If it cannot stabilise within its trials (exit 2, common on a shared machine), it is run
    again with the stability test relaxed and reported unstable, as our own points are when
    they hit their time cap."""
    stem = f"perf_analyzer_{model}_{protocol}_b{batch}_c{concurrency}"
    csv_path, log = workdir / f"{stem}.csv", workdir / f"{stem}.log"
    log.unlink(missing_ok=True)
    # Bounded: every trial is one window, plus start-up and the final pass.
    timeout = 60 + cfg.max_trials * cfg.measurement_ms / 1e3 * 3
    cmd = command(cfg, url, protocol, model, spec, concurrency, batch, csv_path, input_data)
    proc, cores = _attempt(cmd, timeout, log)
    stable = proc.returncode == 0
    if proc.returncode == UNSTABLE_EXIT:
        relaxed = cmd[:]
        relaxed[relaxed.index("--stability-percentage") + 1] = str(RELAXED_STABILITY)
        proc, cores = _attempt(relaxed, timeout, log)
        cmd = relaxed
    if proc.returncode != 0 or not csv_path.is_file():
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        why = next((ln for ln in lines if "rror" in ln), lines[-1] if lines else "no output")
        raise PerfAnalyzerError(f"perf_analyzer exit {proc.returncode}: {why.strip()} (see {log})")
    result = parse_csv(csv_path)
    result.update(batch=batch, protocol=protocol, client_cores=round(cores, 3))
    result["stable"] = stable
    result["command"] = " ".join(cmd)
    return result
