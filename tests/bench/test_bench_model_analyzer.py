"""make model-analyzer: the config Model Analyzer runs with, reading its results, and (where
`make setup-analyzer` installed it) a short real run against our server."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from bench_helpers import build_run_and_repo

from bench import model_analyzer as ma
from serve.install import ensure_backend_dir, server_env, tritonserver_binary
from serve.repository import read_config

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "model_analyzer.yaml"
# The header Model Analyzer 1.43 writes for the fields bench.model_analyzer asks for.
HEADER = "Model Config Path,Concurrency,Throughput (infer/sec),p99 Latency (ms),Instance Group,Max Batch Size\n"  # noqa: E501


def _config(tmp_path: Path, quick: bool = False) -> dict:
    shipped = yaml.safe_load(SHIPPED.read_text())
    machine = ma.machine_settings(Path("model_repository"), tmp_path, [18000, 18001, 18002])
    return ma.build_config(shipped, "photo_pruned_int8", machine, quick)


def test_local_launch_runs_our_server_backends_and_perf_analyzer(tmp_path):
    cfg = _config(tmp_path)
    assert cfg["triton_launch_mode"] == "local"
    assert cfg["triton_server_path"] == str(tritonserver_binary())
    assert cfg["perf_analyzer_path"].endswith(".venv/tools/bin/perf_analyzer")
    flags = cfg["triton_server_flags"]
    assert flags["backend_directory"] == str(ensure_backend_dir())
    assert {flags[k] for k in ("http_address", "grpc_address", "metrics_address")} == {"127.0.0.1"}
    env = cfg["triton_server_environment"]
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # the stub's python3
    assert env["LD_LIBRARY_PATH"] == server_env()["LD_LIBRARY_PATH"]
    assert cfg["triton_http_endpoint"] == "127.0.0.1:18000"
    assert cfg["triton_metrics_url"] == "http://127.0.0.1:18002/metrics"


def test_the_shipped_search_on_the_chosen_model(tmp_path):
    cfg = _config(tmp_path)
    assert list(cfg["profile_models"]) == ["photo_pruned_int8"]  # --model renames it
    (model,) = cfg["profile_models"].values()
    assert model["cpu_only"] is True and model["parameters"]["concurrency"] == [16, 32]
    assert cfg["run_config_search_mode"] == "brute"
    assert ma.describe(cfg) == (
        "brute search, instances 1-3, max batch 1-32, concurrency [16, 32], http"
    )
    quick = _config(tmp_path, quick=True)
    assert (
        ma.describe(quick) == "brute search, instances 1-2, max batch 1-8, concurrency [16], http"
    )
    assert cfg["profile_models"]["photo_pruned_int8"]["parameters"]["concurrency"] == [16, 32]


def _results(tmp_path: Path, rows: str, repo: Path) -> Path:
    csv = tmp_path / "metrics-model-inference.csv"
    csv.write_text(HEADER + rows)
    out_repo = tmp_path / "output_repo"
    for name, count, batch in (("m_config_default", 2, 32), ("m_config_7", 3, 8)):
        (out_repo / name).mkdir(parents=True)
        text = (repo / "tiny_fp32" / "config.pbtxt").read_text()
        text = text.replace("count: 1", f"count: {count}").replace(
            "max_batch_size: 32", f"max_batch_size: {batch}"
        )
        (out_repo / name / "config.pbtxt").write_text(
            text.replace("preferred_batch_size: [8] ", "")
        )
    return csv


def test_winner_is_its_best_measurement_with_its_own_figures(tmp_path, tiny):
    _, repo = tiny
    csv = _results(
        tmp_path,
        "m_config_7,32,9837.0,6.9,3:CPU,8\n"
        "m_config_default,32,9178.0,9.5,2:CPU,32\n"
        "m_config_7,16,8281.0,4.1,3:CPU,8\n"
        "m_config_default,16,8092.0,4.4,2:CPU,32\n",
        repo,
    )
    w = ma.winner(ma.read_measurements(csv), tmp_path / "output_repo", "m")
    assert w["winner_config"] == "m_config_7" and w["measurements"] == 4
    assert (w["winner"]["instances"], w["winner"]["max_batch_size"]) == (3, 8)
    assert w["winner"]["preferred_batch_size"] == [] and w["winner"]["dynamic_batching"]
    assert w["own"] == [
        {"concurrency": 16, "throughput": 8281.0, "p99_ms": 4.1},
        {"concurrency": 32, "throughput": 9837.0, "p99_ms": 6.9},
    ]
    assert [m["throughput"] for m in w["default_own"]] == [8092.0, 9178.0]
    assert ma.knobs(w["winner"]) == {
        "dynamic_batching": True, "instances": 3, "max_batch_size": 8, "max_queue_delay_us": 1000,
        "preferred_batch_size": [], "intra_op_threads": 1, "streams": None,
    }  # fmt: skip


def test_unknown_csv_layout_is_a_one_line_error(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("Model,Batch\nm,1\n")
    with pytest.raises(ma.AnalyzerError, match="no column for model_config_path"):
        ma.read_measurements(csv)
    csv.write_text(HEADER)
    with pytest.raises(ma.AnalyzerError, match="no measurements"):
        ma.read_measurements(csv)


def test_latest_winner_is_read_per_model(tmp_path):
    assert ma.latest_winner(tmp_path, "m") is None
    (tmp_path / "m" / "latest").mkdir(parents=True)
    (tmp_path / "m" / "latest" / "winner.json").write_text(json.dumps({"model": "m"}))
    assert ma.latest_winner(tmp_path, "m") == {"model": "m"}


@pytest.mark.slow
def test_a_short_real_run_against_our_server(tmp_path, capsys):
    if shutil.which("model-analyzer", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("triton-model-analyzer is an optional extra: make setup-analyzer")
    _, repo = build_run_and_repo(tmp_path, variants=("fp32", "pruned_int8"))
    config = repo / "tiny_pruned_int8" / "config.pbtxt"
    # Model Analyzer skips max batch sizes below a preferred size; the deployed config has none
    config.write_text(config.read_text().replace("preferred_batch_size: [8] ", ""))
    shipped = yaml.safe_load(SHIPPED.read_text())
    shipped.update(run_config_search_max_instance_count=1, run_config_search_max_model_batch_size=2)
    shipped["profile_models"]["default_pruned_int8"]["parameters"]["concurrency"] = [2]
    small = tmp_path / "model_analyzer.yaml"
    small.write_text(yaml.safe_dump(shipped))
    out = tmp_path / "out"
    code = ma.main(
        ["--config", str(small), "--repo", str(repo), "--model", "tiny", "--out", str(out)]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    w = json.loads((out / "tiny_pruned_int8" / "latest" / "winner.json").read_text())
    assert w["measurements"] >= 2 and w["own"][0]["concurrency"] == 2
    assert w["own"][0]["throughput"] > 0
    assert read_config(
        out / "tiny_pruned_int8" / "latest" / "output_repo" / w["winner_config"] / "config.pbtxt"
    )
