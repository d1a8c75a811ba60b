"""Our load generator: one asyncio loop, closed loop (fixed concurrency) or open loop (Poisson
arrivals, independent of responses), measured in windows until perf_analyzer's rule holds.

Loopback only and bounded: every point stops at its time cap or request cap, and requests
still pending then are cancelled. Latency in the open loop counts from the scheduled arrival,
so a client that falls behind shows up as latency instead of silently slowing the arrivals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench import noise, triton_stats
from bench.config import NoiseConfig, WindowConfig
from bench.rawhttp import RawHTTPClient
from bench.stats import merge, stable, summarize, window_of
from serve.server import is_loopback

STOP_GRACE_S = 2.0  # pending requests get this long to finish after the point ends


class LoadError(RuntimeError):
    """A target that cannot be measured (not loopback, unreachable, every request failing)."""


@dataclass(frozen=True)
class Load:
    kind: str  # "closed" | "open"
    value: float  # concurrency (closed) or requests per second (open)

    def label(self) -> str:
        return f"c{int(self.value)}" if self.kind == "closed" else f"{self.value:.0f}/s"


def _check_loopback(url: str) -> None:
    host = url.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if not is_loopback(host):
        raise LoadError(f"{url}: the load generator only targets loopback addresses")


class TritonTarget:
    """A Triton model over HTTP or gRPC; statistics via tritonclient's HTTP client.

    HTTP requests are built once (KServe v2 JSON header + binary tensor, what tritonclient
    sends) and posted by the lean RawHTTPClient: tritonclient's per-call JSON and numpy work
    would take CPU the server needs on 2 cores; perf_analyzer's prebuilt requests do not.
    """

    def __init__(self, http_url: str, grpc_url: str, protocol: str, model: str, spec, sample):
        if protocol not in ("http", "grpc"):
            raise LoadError(f"protocol {protocol!r} is not http or grpc")
        _check_loopback(http_url)
        _check_loopback(grpc_url)
        self.http_url, self.grpc_url, self.protocol = http_url, grpc_url, protocol
        self.model, self.spec, self.sample = model, spec, sample
        self.name = f"triton-{protocol}"

    async def __aenter__(self) -> TritonTarget:
        import tritonclient.http.aio as http_aio

        self.stats_client = http_aio.InferenceServerClient(self.http_url, conn_limit=2)
        if self.protocol == "http":
            url = f"http://{self.http_url}/v2/models/{self.model}/infer"
            self.client = RawHTTPClient(url, *infer_request(self.spec, self.sample))
            self.send = self._send_http
        else:
            import tritonclient.grpc.aio as grpc_aio

            self.client = grpc_aio.InferenceServerClient(self.grpc_url)
            tensor = grpc_aio.InferInput(self.spec.input_name, list(self.sample.shape), "FP32")
            tensor.set_data_from_numpy(self.sample)
            self.inputs = [tensor]
            self.outputs = [grpc_aio.InferRequestedOutput(self.spec.output_name)]
            self.send = self._send_grpc
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()
        await self.stats_client.close()

    async def _send_http(self) -> None:
        head, _ = await self.client.post()
        if b"inference-header-content-length" not in head.lower():
            raise ValueError("the answer carries no binary output")

    async def _send_grpc(self) -> None:
        await self.client.infer(self.model, self.inputs, outputs=self.outputs)

    async def snapshot(self) -> dict | None:
        stats = await self.stats_client.get_inference_statistics(self.model)
        return triton_stats.snapshot(stats, self.model)


def infer_request(spec, sample: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a KServe v2 HTTP request with binary input and output tensors."""
    tensor = sample.astype(np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": spec.input_name,
                    "shape": list(sample.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": spec.output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + tensor, headers


class RawHTTPTarget:
    """POST the input as raw float32 bytes (the FastAPI baseline's protocol), with the same
    lean client as the Triton HTTP target: the comparison measures the servers."""

    name = "fastapi-http"

    def __init__(self, url: str, sample: np.ndarray):
        _check_loopback(url)
        self.url, self.body = url, sample.tobytes()

    async def __aenter__(self) -> RawHTTPTarget:
        headers = {"Content-Type": "application/octet-stream"}
        self.client = RawHTTPClient(self.url, self.body, headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()

    async def send(self) -> None:
        await self.client.post()

    async def snapshot(self) -> dict | None:
        return None


class _Run:
    """Shared state of one point: completed records and counters the windows read."""

    def __init__(self, max_requests: int):
        self.records: list[tuple[float, float, bool]] = []  # (end, latency_s, ok)
        self.dropped = 0
        self.sent = 0
        self.max_requests = max_requests
        self.first_error: str | None = None
        self.stop = asyncio.Event()

    def done(self) -> bool:
        return self.stop.is_set() or self.sent >= self.max_requests

    async def one(self, send, since: float) -> None:
        ok = True
        try:
            await send()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every failure is counted as an error of the point
            ok = False
            self.first_error = self.first_error or f"{type(e).__name__}: {e}"[:300]
        now = time.perf_counter()
        self.records.append((now, now - since, ok))
        if not ok:
            await asyncio.sleep(0.001)  # a failing server must not turn the loop into a spin


async def _closed(run: _Run, send, concurrency: int) -> None:
    async def worker():
        while not run.done():
            run.sent += 1
            await run.one(send, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open(run: _Run, send, rate: float, max_inflight: int, seed: int) -> None:
    rng = random.Random(seed)
    pending: set[asyncio.Task] = set()
    due = time.perf_counter()
    try:
        while not run.done():
            due += rng.expovariate(rate)
            delay = due - time.perf_counter()
            # Behind schedule: still yield, so responses are read while arrivals catch up.
            await asyncio.sleep(max(delay, 0.0))
            if len(pending) >= max_inflight:
                run.dropped += 1
                continue
            run.sent += 1
            task = asyncio.create_task(run.one(send, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=STOP_GRACE_S)
    finally:
        for task in pending:
            task.cancel()


async def _measure(target, load: Load, w: WindowConfig, max_inflight: int, seed: int) -> dict:
    run = _Run(w.max_requests)
    if load.kind == "closed":
        generator = _closed(run, target.send, int(load.value))
    else:
        generator = _open(run, target.send, load.value, max_inflight, seed)
    task = asyncio.create_task(generator)
    windows, marks, is_stable = [], [], False
    try:
        await asyncio.sleep(w.warmup_s)
        begin = t = time.perf_counter()
        index, dropped = len(run.records), run.dropped
        marks.append((await target.snapshot(), noise.sample()))
        while not task.done():
            await asyncio.sleep(w.window_s)
            t1 = time.perf_counter()
            n = len(run.records)
            window = window_of(run.records[index:n], t, t1)
            window.dropped = run.dropped - dropped
            windows.append(window)
            marks.append((await target.snapshot(), noise.sample()))
            index, dropped, t = n, run.dropped, t1
            if stable(windows, w.windows, w.stability):
                is_stable = True
                break
            if t1 - begin >= w.max_s or (window.errors and not window.count):
                break
    finally:
        run.stop.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, STOP_GRACE_S + 1)
    if not windows:
        raise LoadError(f"{target.name} {load.label()}: the load ended before any window")
    n = min(w.windows, len(windows))
    point = {
        "target": target.name,
        "load": load.kind,
        "concurrency": int(load.value) if load.kind == "closed" else None,
        "rate": load.value if load.kind == "open" else None,
        "stable": is_stable,
        "windows": len(windows),
        **summarize(merge(windows[-n:])),
        "first_error": run.first_error,
    }
    (srv0, cpu0), (srv1, cpu1) = marks[-n - 1], marks[-1]
    if srv0 is not None and srv1 is not None:
        point.update(triton_stats.split(srv0, srv1))
    point["noise"] = noise.load_between(cpu0, cpu1)
    return point


async def _with_target(make_target: Callable, load: Load, w, max_inflight, seed) -> dict:
    async with make_target() as target:
        return await _measure(target, load, w, max_inflight, seed)


def run_point(
    make_target: Callable,
    load: Load,
    w: WindowConfig,
    guard: NoiseConfig,
    *,
    max_inflight: int = 512,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure one point; redo it while other processes kept the machine busy, keep the quietest.

    `make_target()` returns an async context manager with `name`, `send()` and `snapshot()`.
    """
    attempts = []
    for attempt in range(guard.retries + 1):
        point = asyncio.run(_with_target(make_target, load, w, max_inflight, seed))
        point["busy"] = noise.is_busy(point["noise"], guard.busy_cores)
        attempts.append(point)
        if not point["busy"]:
            break
        log(
            f"  warning: {point['target']} {load.label()}: other processes used "
            f"{point['noise']['other_cores']:.2f} cores (> {guard.busy_cores}); "
            + ("retrying" if attempt < guard.retries else "keeping the quietest attempt")
        )
    best = min(attempts, key=lambda p: p["noise"]["other_cores"])
    best["attempts"] = len(attempts)
    if best["requests"] == 0 and best["errors"]:
        raise LoadError(
            f"{best['target']} {load.label()}: every request failed: {best['first_error']}"
        )
    return best
