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
from tritonclient.utils import serialize_byte_tensor

from bench import noise, triton_stats
from bench.config import NoiseConfig, WindowConfig
from bench.rawhttp import RawHTTPClient
from bench.stats import merge, stable, summarize, window_of
from contract.spec import DTYPES, PROBABILITIES
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


@dataclass(frozen=True)
class Request:
    """One prebuilt request's input: images [batch, C, H, W] (FP32, or UINT8 pixels), or BYTES
    [batch, 1] encoded image files (the ensemble's input)."""

    input_name: str
    datatype: str  # "FP32" | "UINT8" | "BYTES"
    array: np.ndarray

    @property
    def data(self) -> bytes:
        if self.datatype == "BYTES":
            return serialize_byte_tensor(self.array).item()  # a 0-d object array of the bytes
        return np.ascontiguousarray(self.array).tobytes()  # the array is of the datatype


class TritonTarget:
    """A Triton model over HTTP or gRPC; statistics via tritonclient's HTTP client.

    HTTP requests are built once (KServe v2 JSON header + binary tensor, what tritonclient
    sends) and posted by the lean RawHTTPClient: tritonclient's per-call JSON and numpy work
    would take CPU the server needs on 2 cores; perf_analyzer's prebuilt requests do not.
    Several URLs (replicas, comma-separated): each request goes to the next one in turn, and
    the server split is left out (it would be one replica's).
    """

    def __init__(self, http_url: str, grpc_url: str, protocol: str, model: str, spec, sample):
        requests = [Request(spec.input_name, DTYPES[spec.dtype], sample)]
        self._init(http_url, grpc_url, protocol, model, requests, spec.output_name)
        self.name = f"triton-{protocol}"

    def _init(self, http_url, grpc_url, protocol, model, requests, output) -> None:
        if protocol not in ("http", "grpc"):
            raise LoadError(f"protocol {protocol!r} is not http or grpc")
        self.http_urls, self.grpc_urls = http_url.split(","), grpc_url.split(",")
        for url in (*self.http_urls, *self.grpc_urls):
            _check_loopback(url)
        self.protocol, self.model = protocol, model
        self.requests, self.output = requests, output

    async def __aenter__(self) -> TritonTarget:
        import tritonclient.http.aio as http_aio

        single = len(self.http_urls) == 1
        self.stats_client = (
            http_aio.InferenceServerClient(self.http_urls[0], conn_limit=2) if single else None
        )
        self.turn = 0
        if self.protocol == "http":
            bodies = [infer_request(r, self.output) for r in self.requests]
            self.clients = [
                RawHTTPClient(f"http://{url}/v2/models/{self.model}/infer", bodies)
                for url in self.http_urls
            ]
            self.send = self._send_http
        else:
            import tritonclient.grpc.aio as grpc_aio

            self.clients = [grpc_aio.InferenceServerClient(url) for url in self.grpc_urls]
            self.inputs = []
            for r in self.requests:
                tensor = grpc_aio.InferInput(r.input_name, list(r.array.shape), r.datatype)
                tensor.set_data_from_numpy(r.array)
                self.inputs.append([tensor])
            self.outputs = [grpc_aio.InferRequestedOutput(self.output)]
            self.send = self._send_grpc
        return self

    async def __aexit__(self, *exc) -> None:
        for client in self.clients:
            await client.close()
        if self.stats_client is not None:
            await self.stats_client.close()

    def _next(self):
        """(client, request index) for the next request: replicas and requests in turn."""
        self.turn += 1
        return self.clients[self.turn % len(self.clients)], self.turn % len(self.requests)

    async def _send_http(self) -> None:
        client, _ = self._next()  # the client cycles through the prebuilt bodies itself
        head, _ = await client.post()
        if b"inference-header-content-length" not in head.lower():
            raise ValueError("the answer carries no binary output")

    async def _send_grpc(self) -> None:
        client, index = self._next()
        await client.infer(self.model, self.inputs[index], outputs=self.outputs)

    async def snapshot(self) -> dict | None:
        if self.stats_client is None:
            return None
        stats = await self.stats_client.get_inference_statistics(self.model)
        return triton_stats.snapshot(stats, self.model)

    def split(self, before: dict, after: dict) -> dict:
        return triton_stats.split(before, after)


class EnsembleTarget(TritonTarget):
    """The raw path: encoded images to the ensemble. Its split adds each step's (preprocess,
    classifier) queue, compute and batch, and the CPU cores the server's own threads and each
    step's stubs used (`server_pid`), so a reader sees where a request's time went."""

    def __init__(self, http_url, grpc_url, protocol, ensemble, batches, server_pid=None):
        """`ensemble`: bench.repository.Ensemble; `batches`: object arrays [batch, 1] of
        encoded images, sent in turn."""
        requests = [Request(ensemble.input_name, "BYTES", b) for b in batches]
        # probabilities: what users read
        output = PROBABILITIES if PROBABILITIES in ensemble.outputs else ensemble.outputs[0]
        self._init(http_url, grpc_url, protocol, ensemble.name, requests, output)
        self.steps = {"preprocess": ensemble.preprocess, "classifier": ensemble.classifier}
        self.server_pid = server_pid
        self.name = f"ensemble-{protocol}"

    async def snapshot(self) -> dict | None:
        if self.stats_client is None:
            return None
        stats = await self.stats_client.get_inference_statistics("")  # every model at once
        snap = {
            "ensemble": triton_stats.snapshot(stats, self.model),
            **{step: triton_stats.snapshot(stats, m) for step, m in self.steps.items()},
            "t": time.monotonic(),
        }
        if self.server_pid is not None:
            snap["cpu"] = noise.cpu_by_model(self.server_pid)
        return snap

    def split(self, before: dict, after: dict) -> dict:
        out = triton_stats.split(before["ensemble"], after["ensemble"])
        for step in self.steps:
            part = triton_stats.split(before[step], after[step])
            for key in ("queue_ms", "compute_infer_ms", "avg_batch"):
                out[f"{step}_{key}"] = part[key]
        out["avg_batch"] = out["classifier_avg_batch"]  # the model's batch, as on the tensor path
        if "cpu" in after:
            cores = noise.cores_between(before["cpu"], after["cpu"], after["t"] - before["t"])
            out["server_cores"] = cores.get("tritonserver")
            for step, model in self.steps.items():
                out[f"{step}_cores"] = cores.get(model)
        return out


def infer_request(request: Request, output: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a KServe v2 HTTP request with binary input and output tensors."""
    tensor = request.data
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": request.input_name,
                    "shape": list(request.array.shape),
                    "datatype": request.datatype,
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + tensor, headers


class RawHTTPTarget:
    """POST the input as its raw bytes (the FastAPI baseline's protocol), with the same
    lean client as the Triton HTTP target: the comparison measures the servers."""

    name = "fastapi-http"

    def __init__(self, url: str, sample: np.ndarray, ports: list[int] | None = None):
        """`ports`: the server's processes, one a port, that take the connections in turn."""
        _check_loopback(url)
        self.url, self.body, self.ports = url, sample.tobytes(), ports

    async def __aenter__(self) -> RawHTTPTarget:
        headers = {"Content-Type": "application/octet-stream"}
        self.client = RawHTTPClient(self.url, [(self.body, headers)], self.ports)
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
        point.update(target.split(srv0, srv1))
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
        probe_ms = noise.speed_probe()  # before the load: the host's speed, not our own
        point = asyncio.run(_with_target(make_target, load, w, max_inflight, seed))
        point["noise"]["probe_ms"] = round(probe_ms, 2)
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
