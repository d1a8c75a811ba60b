"""Config search: the grid, the pick under a p99 budget, config variations, and --apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_helpers import MODEL

from bench.config import NoiseConfig, SearchConfig, WindowConfig
from bench.loadgen import Load, TritonTarget, run_point
from bench.repository import discover, serving, to_json, variation, write_config
from bench.search import ModelControl, candidates, pick, search
from serve.repository import read_config


def test_grid_is_the_cartesian_product():
    grid = candidates(
        SearchConfig(
            instances=[1, 2],
            max_queue_delay_us=[0, 500],
            preferred_batch_sizes=[[], [8]],
            threads=[1],
        )
    )
    assert len(grid) == 8
    assert grid[0] == {
        "instances": 1,
        "max_queue_delay_us": 0,
        "preferred_batch_size": [],
        "intra_op_threads": 1,
    }


def test_pick_best_throughput_under_budget():
    results = [
        {"throughput": 900.0, "p99_ms": 60.0, "errors": 0},  # fastest but over budget
        {"throughput": 700.0, "p99_ms": 20.0, "errors": 0},
        {"throughput": 800.0, "p99_ms": 10.0, "errors": 3},  # errors disqualify
        {"throughput": 500.0, "p99_ms": 5.0, "errors": 0},
    ]
    assert pick(results, 50.0)["throughput"] == 700.0
    assert pick(results, 1.0) is None


def test_variation_and_override_json(tiny):
    _, repo = tiny
    _, _, variants = discover(repo, None)
    base = variants[0].config
    knobs = serving(base)
    assert knobs["instances"] == 1 and knobs["dynamic_batching"] and knobs["intra_op_threads"] == 1
    changed = variation(
        base, instances=2, max_queue_delay_us=0, preferred_batch_size=[4, 64], intra_op_threads=2
    )
    assert serving(changed) | {"max_batch_size": 32} == {
        **knobs,
        "instances": 2,
        "max_queue_delay_us": 0,
        "preferred_batch_size": [4],
        "intra_op_threads": 2,
    }  # 64 > max_batch_size is dropped
    off = variation(base, dynamic_batching=False)
    assert not serving(off)["dynamic_batching"] and serving(base)["dynamic_batching"]
    override = json.loads(to_json(changed))
    assert override["instance_group"][0]["count"] == 2
    assert override["parameters"]["intra_op_thread_count"]["string_value"] == "2"


def test_write_config_is_parseable(tmp_path, tiny):
    _, repo = tiny
    _, _, variants = discover(repo, None)
    (tmp_path / "m").mkdir()
    path = write_config(tmp_path, "m", variation(variants[0].config, instances=3))
    assert serving(read_config(path))["instances"] == 3


@pytest.mark.slow
def test_search_two_candidates_on_a_real_server(bench_server, tiny, tmp_path):
    _, repo = tiny
    _, spec, variants = discover(repo, None)
    v = variants[0]
    sample = np.zeros((1, 1, 28, 28), dtype=np.float32)
    windows = WindowConfig(warmup_s=0.1, window_s=0.3, max_s=0.9)
    cfg = SearchConfig(
        instances=[1, 2],
        max_queue_delay_us=[500],
        preferred_batch_sizes=[[4]],
        threads=[1],
        concurrency=4,
        p99_ms=10_000,
        apply=True,
    )

    def measure():
        def target():
            return TritonTarget(
                bench_server.http_url, bench_server.grpc_url, "http", v.model, spec, sample
            )

        return run_point(target, Load("closed", 4), windows, NoiseConfig(busy_cores=99))

    control = ModelControl(bench_server.http_url, bench_server.admin_headers)
    # Apply into a copy, so the session server's repository keeps its config.
    copy = tmp_path / "repo"
    (copy / v.model).mkdir(parents=True)
    (copy / v.model / "config.pbtxt").write_text((repo / v.model / "config.pbtxt").read_text())
    outcome = search(control, v.model, v.config, cfg, measure, copy, log=lambda s: None)
    assert [c["instances"] for c in outcome["candidates"]] == [1, 2]
    assert all(c["requests"] > 0 and c["errors"] == 0 for c in outcome["candidates"])
    best = outcome["best"]
    assert best is not None and outcome["applied"]
    written = serving(read_config(copy / v.model / "config.pbtxt"))
    assert written["instances"] == best["instances"] and written["preferred_batch_size"] == [4]
    # the server is back on the repository's own config
    config = control.client.get_model_config(v.model)
    assert int(config["instance_group"][0]["count"]) == 1 and v.model.startswith(MODEL)
    control.close()
