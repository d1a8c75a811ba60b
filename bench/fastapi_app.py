"""The baseline a user might write instead of Triton: FastAPI + uvicorn + one ORT session.

A benchmark baseline, not a product. It is the careful version of that script: raw float32
bytes in and out (no JSON encoding of tensors), ORT run in the threadpool so the event loop
keeps accepting requests, one uvicorn worker, no batching. `bench.fastapi_server` starts it:

    python -m bench.fastapi_app --model model.onnx --port 8100 [--threads 1]
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at
# runtime to know that `request` is the Request, not a query parameter.
import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool


def create_app(model: Path, threads: int) -> FastAPI:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    sample_shape = tuple(meta.shape[1:])
    per_sample = int(np.prod(sample_shape)) * 4
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        body = await request.body()
        if not body or len(body) % per_sample:
            return Response(f"body must be N x {list(sample_shape)} float32", status_code=400)
        x = np.frombuffer(body, dtype=np.float32).reshape(-1, *sample_shape)
        (logits,) = await run_in_threadpool(session.run, None, {meta.name: x})
        return Response(logits.tobytes(), media_type="application/octet-stream")

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fastapi_app")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import uvicorn

    uvicorn.run(
        create_app(args.model, args.threads),
        host="127.0.0.1",  # loopback only: a baseline, never exposed
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
