"""In-process baselines run as N processes at once, each its own model session of `threads`
threads, so a baseline may use the cores the server uses as the server does:

- the raw path's: what a program without a server does with encoded images, contract.model_input
  on each, then the deployed model (on its engine) on the batch; the best of 1 process x the
  model's best threads and one process a core x 1 thread is compared, as the FastAPI baseline
  is given Triton's resources;
- the tensor path's (`decode` False): the model alone on ready batches, in as many processes x
  threads as the deployed instances x threads (pytest-benchmark measures 1 process).

The processes start together after warming up; a measurement whose other-process load was
high is redone, and the quietest is kept.
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import noise
from bench.config import NoiseConfig
from contract.spec import ModelSpec

START_TIMEOUT_S = 300.0  # spawning, importing the engines and compiling the model
WARMUP_STEPS = 3


class PipelineError(RuntimeError):
    pass


def _worker(shape, files, spec_path, seconds, ready, start, results):
    from optimize.evaluate import runner

    run = runner(Path(shape["model"]), shape["threads"], shape["engine"])
    if shape["decode"]:
        step = _decode_step(run, files, spec_path, shape["batch"])
    else:
        step = _tensor_step(run, shape)
    for i in range(WARMUP_STEPS):
        step(i)
    ready.put(True)
    start.wait()
    times, begin = [], time.perf_counter()
    while time.perf_counter() - begin < seconds:
        t = time.perf_counter()
        step(len(times))
        times.append(time.perf_counter() - t)
    results.put({"images": len(times) * shape["batch"], "seconds": time.perf_counter() - begin,
                 "batch_ms": statistics.median(times) * 1e3})  # fmt: skip


def _decode_step(run, files, spec_path, batch: int) -> Callable[[int], None]:
    from contract import load_spec, model_input

    spec = load_spec(spec_path)
    images = [Path(f).read_bytes() for f in files]

    def step(i: int) -> None:
        chosen = (images[(i * batch + j) % len(images)] for j in range(batch))
        run(np.stack([model_input(data, spec) for data in chosen]))

    return step


def random_batch(dtype: str, dims: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A batch of the model's input (values do not matter): uint8 pixels or float32."""
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, dims, dtype=np.uint8)
    return rng.standard_normal(dims).astype(np.float32)


def _tensor_step(run, shape: dict) -> Callable[[int], None]:
    # As the served sweep's requests (Bench.sample); made once, outside the clock.
    x = random_batch(shape["input_dtype"], (shape["batch"], *shape["input_dims"]))
    return lambda i: run(x)


def _collect(q, procs: list, timeout: float) -> list:
    """One message from each worker; a worker that exits first is an error at once."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < len(procs):
        try:
            out.append(q.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise PipelineError(f"a worker exited with code {failed[0]}") from None
            if time.monotonic() > deadline:
                raise PipelineError(f"no answer from the workers in {timeout:.0f} s") from None
    return out


def _once(shape: dict, files: list[Path], spec_path: Path | None, seconds: float) -> dict:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no state from the parent
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    args = (shape, [str(f) for f in files], spec_path and str(spec_path), seconds, ready, start,
            results)  # fmt: skip
    procs = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(shape["workers"])]
    for p in procs:
        p.start()
    try:
        _collect(ready, procs, START_TIMEOUT_S)  # every worker warmed up: start them together
        before = noise.sample()  # before the start, so the whole measurement is inside
        start.set()
        done = _collect(results, procs, seconds + START_TIMEOUT_S)
        after = noise.sample()
    except PipelineError as e:
        raise PipelineError(f"in-process pipeline {_label(shape)} failed: {e}") from None
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    return {
        "images_per_s": sum(d["images"] / d["seconds"] for d in done),
        "batch_ms": statistics.median(d["batch_ms"] for d in done),
        "noise": noise.load_between(before, after),
    }


def _label(shape: dict) -> str:
    what = "" if shape["decode"] else ", model only"
    return (
        f"{shape['workers']} process(es) x {shape['threads']} thread(s), batch {shape['batch']}"
        + what
    )


def shapes(model: Path, engine: str, batch: int, threads: int, cores: int) -> list[dict]:
    """The raw path's: 1 process at the model's best (batch, threads), and one process a core x
    1 thread."""
    base = {"model": str(model), "engine": engine, "batch": batch, "decode": True}
    out = [{**base, "workers": 1, "threads": threads}]
    if cores > 1:
        out.append({**base, "workers": cores, "threads": 1})
    return out


def tensor_shape(
    model: Path, engine: str, batch: int, workers: int, threads: int, spec: ModelSpec
) -> dict:
    """The tensor path's: `workers` processes x `threads` threads, the model on ready batches
    of the spec's input."""
    return {
        "model": str(model), "engine": engine, "batch": batch, "decode": False,
        "workers": workers, "threads": threads, "input_dtype": spec.dtype,
        "input_dims": [spec.channels, spec.height, spec.width],
    }  # fmt: skip


def shape_of(row: dict) -> dict:
    """The shape a row of `measure` was measured in: run it again with `measure([shape])`."""
    keys = ("model", "engine", "batch", "decode", "workers", "threads", "input_dtype",
            "input_dims")  # fmt: skip
    return {k: row[k] for k in keys if k in row}


def measure(
    shape_list: list[dict],
    files: list[Path],
    spec_path: Path | None,
    seconds: float,
    guard: NoiseConfig,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """images/s of each shape, quietest of up to 1 + guard.retries attempts."""
    rows = []
    for shape in shape_list:
        attempts = []
        for attempt in range(guard.retries + 1):
            attempts.append(_once(shape, files, spec_path, seconds))
            if not noise.is_busy(attempts[-1]["noise"], guard.busy_cores):
                break
            log(
                f"  warning: in-process pipeline {_label(shape)}: other processes used "
                f"{attempts[-1]['noise']['other_cores']:.2f} cores (> {guard.busy_cores}); "
                + ("retrying" if attempt < guard.retries else "keeping the quietest attempt")
            )
        best = min(attempts, key=lambda a: a["noise"]["other_cores"])
        row = {**shape, **best, "attempts": len(attempts)}
        row["busy"] = noise.is_busy(row["noise"], guard.busy_cores)
        rows.append(row)
        log(
            f"  pipeline {_label(shape)} ({shape['engine']}): {row['images_per_s']:.0f} images/s, "
            f"{row['batch_ms']:.2f} ms a batch"
        )
    return rows
