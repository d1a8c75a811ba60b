"""`python -m bench.model_analyzer`: NVIDIA's Triton Model Analyzer on our server and repository.

Local launch mode, as a new user would run it: Model Analyzer starts the nvidia-pytriton
wheel's tritonserver itself with our backend directory and `serve`'s environment, drives it
with our perf_analyzer (`make setup-bench`), and brute-searches instance count x max batch size
(configs/model_analyzer.yaml). The run's folder keeps the full config it ran, its log, its CSVs
and `winner.json`: its best configuration's serving knobs and its own figures, which
`python -m bench` (section `analyzer`) loads and measures beside our own search's winner.

    python -m bench.model_analyzer [--model NAME] [--quick]    # or: make model-analyzer
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench import perf_analyzer
from bench.config import PerfAnalyzerConfig
from bench.perf_analyzer import PerfAnalyzerError
from bench.repository import serving
from bench.search import KNOBS
from contract.atomic import atomic_write_json, atomic_write_text
from serve import procs
from serve.errors import ServerError
from serve.install import MALLOC_ENV, ensure_backend_dir, server_env, tritonserver_binary
from serve.repository import read_config
from serve.server import free_ports

DEFAULT_CONFIG = Path("configs/model_analyzer.yaml")
DEFAULT_OUT = Path("bench/results/model_analyzer")
VARIANT = "pruned_int8"  # the variant optimize deploys as its best CPU variant
# --quick: a few minutes while developing; the full search is configs/model_analyzer.yaml's.
QUICK = {
    "run_config_search_max_instance_count": 2,
    "run_config_search_max_model_batch_size": 8,
    "concurrency": [16],
}
STOP_GRACE_S = 60  # Model Analyzer stops its server and writes a checkpoint on SIGINT
INFERENCE_CSV = "metrics-model-inference.csv"
# Its CSV columns (inference_output_fields), named as it writes them in the header.
FIELDS = {
    "model_config_path": "config",
    "concurrency": "concurrency",
    "perf_throughput": "throughput",
    "perf_latency_p99": "p99_ms",
}


class AnalyzerError(RuntimeError):
    pass


def executable() -> Path:
    path = Path(sys.executable).parent / "model-analyzer"
    if not path.is_file():
        raise AnalyzerError(f"{path} not found: run `make setup-analyzer`")
    return path


def machine_settings(repo: Path, out: Path, ports: list[int]) -> dict:
    """What depends on this machine: paths, the server's environment, loopback ports."""
    http, grpc, metrics = ports
    env = server_env()
    return {
        "model_repository": str(repo.absolute()),
        "triton_launch_mode": "local",
        "triton_server_path": str(tritonserver_binary()),
        "perf_analyzer_path": str(perf_analyzer.binary(PerfAnalyzerConfig())),
        "triton_server_flags": {
            "backend_directory": str(ensure_backend_dir()),
            "http_address": "127.0.0.1",
            "grpc_address": "127.0.0.1",
            "metrics_address": "127.0.0.1",
        },
        # The stub finds our interpreter's libpython and, through `python3` on PATH, the
        # venv's onnxruntime; the same allocator settings: what `python -m serve` gives.
        "triton_server_environment": {k: env[k] for k in ("LD_LIBRARY_PATH", "PATH", *MALLOC_ENV)},
        "triton_http_endpoint": f"127.0.0.1:{http}",
        "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
        "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
        "output_model_repository_path": str((out / "output_repo").absolute()),
        "export_path": str((out / "export").absolute()),
        "checkpoint_directory": str((out / "checkpoints").absolute()),
        "triton_output_path": str((out / "tritonserver.log").absolute()),
        "inference_output_fields": list(FIELDS) + ["instance_group", "max_batch_size"],
    }


def build_config(shipped: dict, model: str, machine: dict, quick: bool) -> dict:
    """The shipped search for `model`, this machine's settings, --quick's limits."""
    cfg = {**shipped, **machine}
    (settings,) = shipped["profile_models"].values()  # the shipped file names one model
    settings = {**settings, "parameters": dict(settings.get("parameters", {}))}
    if quick:
        cfg.update({k: v for k, v in QUICK.items() if k != "concurrency"})
        settings["parameters"]["concurrency"] = QUICK["concurrency"]
    cfg["profile_models"] = {model: settings}
    return cfg


def describe(cfg: dict) -> str:
    (settings,) = cfg["profile_models"].values()
    return (
        f"{cfg['run_config_search_mode']} search, instances "
        f"{cfg['run_config_search_min_instance_count']}-"
        f"{cfg['run_config_search_max_instance_count']}, max batch "
        f"{cfg['run_config_search_min_model_batch_size']}-"
        f"{cfg['run_config_search_max_model_batch_size']}, concurrency "
        f"{settings['parameters']['concurrency']}, {cfg['client_protocol']}"
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (it stops its tritonserver), then kill whatever of its servers is left."""
    servers = procs.children(process.pid)  # tritonserver runs in a session of its own
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for pid in servers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def run(cfg: dict, out: Path, timeout_s: float) -> None:
    """Model Analyzer's profile command with `cfg`, its output in out/model_analyzer.log."""
    config_path = atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    log = out / "model_analyzer.log"
    cmd = [str(executable()), "profile", "-f", str(config_path)]
    with open(log, "wb") as f:
        process = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        code = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AnalyzerError(f"Model Analyzer did not finish in {timeout_s:.0f} s ({log})") from None
    finally:
        _stop(process)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise AnalyzerError(f"Model Analyzer exit {code}: {' | '.join(tail)} (see {log})")


def read_measurements(path: Path) -> list[dict]:
    """Its inference CSV: one row per (config, concurrency)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise AnalyzerError(f"{path}: no measurements")
    headers = _headers(rows[0])
    out = []
    for row in rows:
        m = {name: row[headers[field]] for field, name in FIELDS.items()}
        m["concurrency"] = int(m["concurrency"])
        for key in ("throughput", "p99_ms"):
            m[key] = float(m[key])
        out.append(m)
    return out


def _headers(row: dict) -> dict[str, str]:
    """Field -> its CSV header (Model Analyzer writes headers such as `p99 Latency (ms)`)."""
    wanted = {
        "model_config_path": "model config path",
        "concurrency": "concurrency",
        "perf_throughput": "throughput",
        "perf_latency_p99": "p99 latency",
    }
    found = {}
    for field, words in wanted.items():
        match = next((h for h in row if h.strip().lower().startswith(words)), None)
        if match is None:
            raise AnalyzerError(f"its CSV has no column for {field} (columns: {list(row)})")
        found[field] = match
    return found


def winner(measurements: list[dict], output_repo: Path, model: str) -> dict:
    """Its best configuration (the highest throughput it measured), that configuration's
    figures at each concurrency, and its default configuration's (our deployed one's)."""
    top = max(measurements, key=lambda m: m["throughput"])
    config = read_config(output_repo / top["config"] / "config.pbtxt")
    default = f"{model}_config_default"

    def own(name: str) -> list[dict]:
        rows = sorted(
            (m for m in measurements if m["config"] == name), key=lambda m: m["concurrency"]
        )
        return [{k: m[k] for k in ("concurrency", "throughput", "p99_ms")} for m in rows]

    return {
        "model": model,
        "winner_config": top["config"],
        "winner": serving(config),
        "own": own(top["config"]),
        "default_own": own(default),
        "measurements": len(measurements),
    }


def knobs(w: dict) -> dict:
    """bench.repository.variation's arguments for a winner's serving knobs."""
    # .get: a winner.json written before a knob existed leaves that knob unchanged (None)
    return {"dynamic_batching": w["dynamic_batching"], **{k: w.get(k) for k in KNOBS}}


def latest_winner(results: Path, model: str) -> dict | None:
    path = results / model / "latest" / "winner.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.model_analyzer", description=__doc__)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--model", default="default", help="model family (profiles NAME_pruned_int8)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quick", action="store_true", help="instances 1-2, max batch 1-8, c16")
    p.add_argument("--timeout-min", type=float, default=120.0)
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from bench.run import link_latest  # the same `latest` link as bench's own runs

    args = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so Model Analyzer and its tritonserver are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    model = f"{args.model}_{VARIANT}"
    try:
        if not (args.repo / model / "config.pbtxt").is_file():
            raise AnalyzerError(f"{args.repo}/{model}/config.pbtxt not found: run `make optimize`")
        shipped = yaml.safe_load(args.config.read_text())
        out = args.out / model / time.strftime("%Y%m%d-%H%M%S")
        out.mkdir(parents=True)
        cfg = build_config(
            shipped, model, machine_settings(args.repo, out, free_ports(3)), args.quick
        )
        load = os.getloadavg()
        print(
            f"model-analyzer: {describe(cfg)} on {model}; load {load[0]:.2f} -> {out}", flush=True
        )
        t0 = time.monotonic()
        run(cfg, out, 60 * args.timeout_min)
        result = winner(
            read_measurements(out / "export" / "results" / INFERENCE_CSV),
            Path(cfg["output_model_repository_path"]),
            model,
        )
    except (AnalyzerError, PerfAnalyzerError, ServerError, OSError, ValueError) as e:
        print(f"model-analyzer: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("model-analyzer: interrupted", file=sys.stderr)
        return 130
    result.update(
        source=str(out),
        search=describe(cfg),
        minutes=round((time.monotonic() - t0) / 60, 1),
        load_before=round(load[0], 2),
        load_after=round(os.getloadavg()[0], 2),
    )
    atomic_write_json(out / "winner.json", result)
    link_latest(out)
    w = result["winner"]
    print(
        f"model-analyzer: winner {result['winner_config']}: {w['instances']} instance(s), max "
        f"batch {w['max_batch_size']}; "
        + ", ".join(
            f"c{m['concurrency']} {m['throughput']:.0f}/s p99 {m['p99_ms']:.2f} ms"
            for m in result["own"]
        )
        + f" ({result['minutes']} min, load {result['load_before']} -> {result['load_after']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
