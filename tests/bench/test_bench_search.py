"""Config search: the grid, the pick under a p99 budget, config variations, and --apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_helpers import MODEL

from bench.config import NoiseConfig, SearchConfig, WindowConfig
from bench.loadgen import Load, TritonTarget, run_point
from bench.repository import discover, serving, to_json, variation, write_config
from bench.search import STAGES, ModelControl, candidates, pick, search
from serve.repository import read_config


def _cfg(**kw) -> SearchConfig:
    grid = dict(instances=[1, 2], max_batch_sizes=[8, 32], max_queue_delay_us=[0, 500],
                preferred_batch_sizes=[[], [8]], threads=[1], streams=[1])  # fmt: skip
    return SearchConfig(**(grid | kw))


def test_grid_is_the_cartesian_product():
    grid = candidates(_cfg())
    assert len(grid) == 16
    assert grid[0] == {
        "instances": 1,
        "max_batch_size": 8,
        "max_queue_delay_us": 0,
        "preferred_batch_size": [],
        "intra_op_threads": 1,
        "streams": 1,
    }
    stage1 = candidates(_cfg(), STAGES[0])
    assert len(stage1) == 8 and all(c["max_queue_delay_us"] == 0 for c in stage1)
    assert {
        (c["instances"], c["max_batch_size"], str(c["preferred_batch_size"])) for c in stage1
    } == {(i, b, p) for i in (1, 2) for b in (8, 32) for p in ("[]", "[8]")}
    fixed = {**grid[0], "instances": 2, "max_batch_size": 32}
    stage2 = candidates(_cfg(), STAGES[1], fixed)
    assert [c["max_queue_delay_us"] for c in stage2] == [0, 500]
    assert all((c["instances"], c["max_batch_size"]) == (2, 32) for c in stage2)


def _result(rps: float, *p99s: float, errors: int = 0, accepts: bool = True) -> dict:
    return {"throughput": rps, "accepts_largest": accepts,
            "points": [{"p99_ms": p, "errors": errors} for p in p99s]}  # fmt: skip


def test_pick_best_mean_throughput_within_budget_at_every_concurrency():
    results = [
        _result(990.0, 5.0, 5.0, accepts=False),  # fastest, but refuses the largest request
        _result(900.0, 20.0, 60.0),  # over budget at its second concurrency
        _result(700.0, 20.0, 30.0),
        _result(800.0, 10.0, 10.0, errors=3),  # errors disqualify
        _result(500.0, 5.0, 5.0),
    ]
    assert pick(results, 50.0)["throughput"] == 700.0
    assert pick(results, 1.0) is None


class FakeControl:
    """Records the configs loaded; the measurement reads the knobs of the last one."""

    def __init__(self):
        self.loaded = []

    def load(self, model, config):
        self.loaded.append(serving(config))


def _synthetic(control: FakeControl):
    """A server on which 2 instances x max batch 8 is fastest, then a preferred size of 8."""

    def measure(c: int) -> dict:
        k = control.loaded[-1]
        rps = 1000 * k["instances"] + (300 if k["max_batch_size"] == 8 else 0)
        rps += 250 if k["preferred_batch_size"] == [8] else 0
        return {"throughput": rps + c, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0,
                "concurrency": c}  # fmt: skip

    return measure


def test_staged_search_fixes_stage_one_winner_and_restores_the_deployed_config(tiny):
    _, repo = tiny
    _, _, variants = discover(repo, None)
    base = variants[0].config  # max batch 32, preferred [8], delay 1000 us
    control = FakeControl()
    cfg = _cfg(concurrency=[4, 8])
    outcome = search(control, "m", base, cfg, _synthetic(control), repo, log=lambda s: None)
    # max batch 8 with preferred [8] is max batch 8 without: measured once
    stages = [c["stage"] for c in outcome["candidates"]]
    assert stages == [1] * 6 + [2] * 1  # stage 2's delay 0 is stage 1's winner, not redone
    best = outcome["best"]
    assert (best["instances"], best["max_batch_size"], best["preferred_batch_size"]) == (2, 8, [])
    assert best["throughput"] == 1000 * 2 + 300 + 6  # mean over c4 and c8
    assert outcome["candidates"][-1]["max_queue_delay_us"] == 500  # stage 2 on the winner
    assert control.loaded[-1] == serving(base)  # back to the deployed config
    full = search(control, "m", base, _cfg(staged=False, concurrency=[4]), _synthetic(control),
                  repo, log=lambda s: None)  # fmt: skip
    assert len(full["candidates"]) == 12  # 16, less the 4 max batch 8 + preferred 8 repeats


def test_a_winner_accepts_the_largest_request(tiny):
    _, repo = tiny
    _, _, variants = discover(repo, None)
    control = FakeControl()
    outcome = search(control, "m", variants[0].config, _cfg(concurrency=[4]),
                     _synthetic(control), repo, log=lambda s: None, largest_request=32)  # fmt: skip
    refused = [c for c in outcome["candidates"] if not c["accepts_largest"]]
    assert refused and all(c["max_batch_size"] == 8 for c in refused)
    best = outcome["best"]  # max batch 8 is faster here, but refuses 32-image requests
    assert (best["instances"], best["max_batch_size"], best["preferred_batch_size"]) == (2, 32, [8])
    assert outcome["largest_request"] == 32


def test_variation_and_override_json(tiny):
    _, repo = tiny
    _, _, variants = discover(repo, None)
    base = variants[0].config
    knobs = serving(base)
    assert knobs["instances"] == 1 and knobs["dynamic_batching"] and knobs["intra_op_threads"] == 1
    changed = variation(
        base, instances=2, max_queue_delay_us=0, preferred_batch_size=[4, 64], intra_op_threads=2
    )
    assert serving(changed) == {
        **knobs,
        "instances": 2,
        "max_queue_delay_us": 0,
        "preferred_batch_size": [4],
        "intra_op_threads": 2,
    }  # 64 > max_batch_size is dropped
    smaller = serving(variation(base, max_batch_size=4))  # base prefers 8: dropped too
    assert smaller["max_batch_size"] == 4 and smaller["preferred_batch_size"] == []
    assert serving(variation(base, max_batch_size=16))["preferred_batch_size"] == [8]
    assert serving(variation(base, max_batch_size=8))["preferred_batch_size"] == []  # = max
    off = variation(base, dynamic_batching=False)
    assert not serving(off)["dynamic_batching"] and serving(base)["dynamic_batching"]
    override = json.loads(to_json(changed))
    assert sum(int(g["count"]) for g in override["instance_group"]) == 2
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
    sample = np.zeros((1, 1, 28, 28), dtype=spec.dtype)  # the served input: uint8 pixels
    windows = WindowConfig(warmup_s=0.1, window_s=0.3, max_s=0.9)
    cfg = SearchConfig(
        instances=[1, 2],
        max_batch_sizes=[16],
        max_queue_delay_us=[500],
        preferred_batch_sizes=[[4]],
        threads=[1],
        concurrency=[4],
        p99_ms=10_000,
        apply=True,
    )

    def measure(c: int):
        def target():
            return TritonTarget(
                bench_server.http_url, bench_server.grpc_url, "http", v.model, spec, sample
            )

        return run_point(target, Load("closed", c), windows, NoiseConfig(busy_cores=99))

    control = ModelControl(bench_server.http_url, bench_server.admin_headers)
    # Apply into a copy, so the session server's repository keeps its config.
    copy = tmp_path / "repo"
    (copy / v.model).mkdir(parents=True)
    (copy / v.model / "config.pbtxt").write_text((repo / v.model / "config.pbtxt").read_text())
    outcome = search(control, v.model, v.config, cfg, measure, copy, log=lambda s: None)
    assert [c["instances"] for c in outcome["candidates"]] == [1, 2]
    assert all(c["points"][0]["requests"] > 0 and c["errors"] == 0 for c in outcome["candidates"])
    best = outcome["best"]
    assert best is not None and outcome["applied"]
    written = serving(read_config(copy / v.model / "config.pbtxt"))
    assert written["instances"] == best["instances"] and written["preferred_batch_size"] == [4]
    assert written["max_batch_size"] == 16
    # the server is back on the repository's own config
    config = control.client.get_model_config(v.model)
    assert int(config["instance_group"][0]["count"]) == 1 and v.model.startswith(MODEL)
    assert int(config["max_batch_size"]) == 32
    control.close()
