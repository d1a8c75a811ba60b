"""The baseline a user might write instead of Triton: FastAPI + uvicorn + one model session.

A benchmark baseline, not a product. It is the careful version of that script: the raw tensor
bytes in and out (no JSON encoding of tensors), ORT run in the threadpool so the event loop
keeps accepting requests, no batching. It runs the model on the engine Triton serves it
with (ONNX Runtime or OpenVINO), so the comparison is of serving, not of engines.
`bench.fastapi_server` starts one such process a worker, each on its own port: uvicorn's
own `--workers` (kept for running it by hand) share one socket, and a burst of new
connections lands on one of them.

    python -m bench.fastapi_app --model model.onnx --port 8100 [--threads 1] [--workers 1]
        [--engine onnxruntime|openvino]
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at
# runtime to know that `request` is the Request, not a query parameter.
import argparse
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from uvicorn.protocols.http.auto import AutoHTTPProtocol


def onnxruntime_logits(model: Path, threads: int) -> tuple[Callable, tuple]:
    """(x -> logits, the input's per-sample shape, its dtype) on one ORT session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    # The logits only: optimize's models also output probabilities, which Triton's tensor
    # path (the one compared) does not request either.
    first = session.get_outputs()[0].name
    dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}[meta.type]
    return (lambda x: session.run([first], {meta.name: x})[0]), tuple(meta.shape[1:]), dtype


def openvino_logits(model: Path, threads: int) -> tuple[Callable, tuple]:
    """(x -> logits, per-sample shape, dtype) on OpenVINO compiled as Triton's OpenVINO backend
    compiles it (backend_core.OpenVINOBatches: a copy per batch size within the budget), with
    the properties optimize gives that backend; an infer request per threadpool thread."""
    from optimize.evaluate import openvino_compile_properties, openvino_core
    from serve.backends.backend_core import STATIC_IMAGES, OpenVINOBatches

    core = openvino_core()
    batches = OpenVINOBatches(
        core, core.read_model(str(model)), openvino_compile_properties(threads), STATIC_IMAGES
    )
    port = batches.dynamic.input(0)
    shape = tuple(d.get_length() for d in port.get_partial_shape()[1:])
    return (lambda x: batches.infer({0: x})[0]), shape, port.get_element_type().to_dtype()


ENGINES = {"onnxruntime": onnxruntime_logits, "openvino": openvino_logits}


def create_app(model: Path, threads: int, engine: str = "onnxruntime") -> FastAPI:
    logits_of, sample_shape, dtype = ENGINES[engine](model, threads)
    per_sample = int(np.prod(sample_shape)) * np.dtype(dtype).itemsize
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        body = await request.body()
        if not body or len(body) % per_sample:
            message = f"body must be N x {list(sample_shape)} {np.dtype(dtype).name}"
            return Response(message, status_code=400)
        x = np.frombuffer(body, dtype=dtype).reshape(-1, *sample_shape)
        logits = await run_in_threadpool(logits_of, x)
        return Response(logits.tobytes(), media_type="application/octet-stream")

    return app


class NoDelayHTTP(AutoHTTPProtocol):
    """uvicorn's HTTP protocol with TCP_NODELAY on every connection.

    With workers > 1, each worker gets the listening socket from uvicorn's supervisor, and
    asyncio then leaves Nagle's algorithm on (the inherited socket reports protocol 0, not
    TCP): every response waits for the client's delayed ACK, ~40 ms. Measured here: 2
    workers served ~350 requests/s at c16 without this, one worker ~2,000.
    """

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


# uvicorn's worker processes build the app from an import string, so its settings travel in
# the environment they inherit.
MODEL_ENV, THREADS_ENV, ENGINE_ENV = (
    "BENCH_FASTAPI_MODEL", "BENCH_FASTAPI_THREADS", "BENCH_FASTAPI_ENGINE"
)  # fmt: skip


def app_from_env() -> FastAPI:
    return create_app(
        Path(os.environ[MODEL_ENV]), int(os.environ[THREADS_ENV]), os.environ[ENGINE_ENV]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fastapi_app")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--engine", choices=sorted(ENGINES), default="onnxruntime")
    args = p.parse_args(argv)
    import uvicorn

    os.environ[MODEL_ENV], os.environ[THREADS_ENV] = str(args.model.absolute()), str(args.threads)
    os.environ[ENGINE_ENV] = args.engine
    uvicorn.run(
        "bench.fastapi_app:app_from_env",
        factory=True,
        workers=args.workers,
        http=NoDelayHTTP,
        host="127.0.0.1",  # loopback only: a baseline, never exposed
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
