"""The load generator's loops and noise retries against a fake in-process target (no server)."""

from __future__ import annotations

import asyncio

import pytest

from bench import loadgen, noise
from bench.config import NoiseConfig, WindowConfig
from bench.loadgen import Load, LoadError, run_point

FAST = WindowConfig(warmup_s=0.05, window_s=0.1, max_s=0.5, windows=3)


class FakeTarget:
    name = "fake"

    def __init__(self, delay: float = 0.002, fail: bool = False):
        self.delay, self.fail, self.sent, self.snaps = delay, fail, 0, 0

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def send(self):
        self.sent += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("refused")

    async def snapshot(self):
        self.snaps += 1
        return None


def test_closed_loop_point_has_percentiles_and_counts():
    target = FakeTarget()
    p = run_point(lambda: target, Load("closed", 4), FAST, NoiseConfig(busy_cores=99))
    assert p["load"] == "closed" and p["concurrency"] == 4 and p["requests"] > 0
    assert p["errors"] == 0 and p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
    assert 3 <= p["windows"] <= 5 and target.snaps == p["windows"] + 1
    assert p["attempts"] == 1 and "other_cores" in p["noise"] and p["noise"]["probe_ms"] > 0


def test_request_cap_bounds_a_point():
    capped = WindowConfig(warmup_s=0.0, window_s=0.1, max_s=0.5, max_requests=20)
    target = FakeTarget(delay=0.0005)
    run_point(lambda: target, Load("closed", 2), capped, NoiseConfig(busy_cores=99))
    assert target.sent <= 20 + 2  # each worker may have one request in flight at the cap


def test_open_loop_drops_beyond_max_inflight():
    slow = FakeTarget(delay=0.2)  # responses far slower than arrivals
    p = run_point(
        lambda: slow, Load("open", 500.0), FAST, NoiseConfig(busy_cores=99), max_inflight=5
    )
    assert p["load"] == "open" and p["rate"] == 500.0 and p["dropped"] > 0


def test_every_request_failing_is_an_error():
    with pytest.raises(LoadError, match="every request failed: ConnectionError: refused"):
        run_point(
            lambda: FakeTarget(fail=True), Load("closed", 2), FAST, NoiseConfig(busy_cores=99)
        )


def test_busy_machine_is_retried_and_quietest_kept(monkeypatch):
    loads = iter([1.5, 0.9, 1.2])  # other cores per attempt

    def fake_load(a, b):
        return {
            "seconds": 1.0,
            "cores": 2,
            "busy_cores": 2.0,
            "our_cores": 0.5,
            "other_cores": next(loads),
        }

    monkeypatch.setattr(noise, "load_between", fake_load)
    logged = []
    p = run_point(
        lambda: FakeTarget(),
        Load("closed", 1),
        FAST,
        NoiseConfig(busy_cores=0.25, retries=2),
        log=logged.append,
    )
    assert p["attempts"] == 3 and p["noise"]["other_cores"] == 0.9 and p["busy"]
    assert len(logged) == 3 and "keeping the quietest" in logged[-1]


def test_only_loopback_targets():
    with pytest.raises(LoadError, match="loopback"):
        loadgen.RawHTTPTarget("http://10.1.2.3:8000/infer", b"")
