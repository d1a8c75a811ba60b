"""Serving config search, what Model Analyzer's brute-force mode does, without Docker or a GPU.

Knobs: instance count, max batch size, preferred batch sizes, max_queue_delay, threads per
instance (ONNX Runtime's intra-op threads, OpenVINO's INFERENCE_NUM_THREADS) and, for an
OpenVINO-served model, its NUM_STREAMS. Each candidate is loaded into the running server through the
load API with a config override (the repository is untouched) and measured at each search
concurrency; the best mean throughput whose p99 fits the budget at every concurrency wins,
among the candidates that accept the largest request the clients send (`largest_request`
images: a max batch size below it refuses them). `--apply` writes the winner's config.pbtxt.

How many images one execution takes decides how evenly the work spreads over the instances:
with max batch 32 and no queue delay, the first free instance takes every queued request and
the other waits. A max batch size caps that, and so does a preferred batch size while larger
requests stay accepted. Stage 1 therefore tries every instance count x max batch x preferred
size (delay and threads at their first values); stage 2 tries every delay x thread count on
stage 1's winner. Unstaged: the full cartesian product. Candidates whose config comes out the
same as one already measured (a preferred size at or above the max batch) are skipped.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from bench.config import SearchConfig
from bench.repository import serving, to_json, variation, write_config

KNOBS = ("instances", "max_batch_size", "max_queue_delay_us", "preferred_batch_size",
         "intra_op_threads", "streams")  # fmt: skip
STAGES = (("instances", "max_batch_size", "preferred_batch_size"),
          ("max_queue_delay_us", "intra_op_threads", "streams"))  # fmt: skip


class ModelControl:
    """Triton's model-repository API (an admin API: our server's key opens it)."""

    def __init__(self, http_url: str, admin_headers: dict[str, str]):
        import tritonclient.http as httpclient

        self.client = httpclient.InferenceServerClient(
            http_url, connection_timeout=300.0, network_timeout=300.0
        )
        self.headers = admin_headers

    def load(self, model: str, config: mc.ModelConfig) -> None:
        """(Re)load `model` with `config` in place of its config.pbtxt.

        Always with an explicit config: a plain reload is a no-op when the model's files
        have not changed, so it would leave the last override in service.
        """
        self.client.load_model(model, headers=self.headers, config=to_json(config))
        if not self.client.is_model_ready(model):
            raise RuntimeError(f"{model} is not ready after loading")

    def close(self) -> None:
        self.client.close()


def _grid(cfg: SearchConfig) -> dict[str, list]:
    return {
        "instances": cfg.instances,
        "max_batch_size": cfg.max_batch_sizes,
        "max_queue_delay_us": cfg.max_queue_delay_us,
        "preferred_batch_size": [list(p) for p in cfg.preferred_batch_sizes],
        "intra_op_threads": cfg.threads,
        "streams": cfg.streams,
    }


def candidates(cfg: SearchConfig, varied=KNOBS, fixed: dict | None = None) -> list[dict]:
    """The product of the `varied` knobs' values; the others from `fixed`, else their first."""
    grid = _grid(cfg)
    base = {k: grid[k][0] for k in KNOBS} | (fixed or {})
    combos = itertools.product(*(grid[k] for k in varied))
    return [base | dict(zip(varied, combo, strict=True)) for combo in combos]


def fits(r: dict, p99_ms: float) -> bool:
    return all(m["errors"] == 0 and m["p99_ms"] <= p99_ms for m in r["points"])


def pick(results: list[dict], p99_ms: float) -> dict | None:
    """Highest mean throughput among error-free results that accept the largest request and
    whose p99 fits the budget at every concurrency."""
    return max(
        (r for r in results if r["accepts_largest"] and fits(r, p99_ms)),
        key=lambda r: r["throughput"],
        default=None,
    )


def _new(grid: list[dict], base: mc.ModelConfig, seen: list[dict]) -> list[tuple]:
    """(candidate, its config) for the candidates whose config is not in `seen` nor repeated."""
    out = []
    for cand in grid:
        config = variation(base, **cand)
        if serving(config) not in seen:
            seen = [*seen, serving(config)]
            out.append((cand, config))
    return out


def _describe(cand: dict) -> str:
    return (
        f"instances {cand['instances']}, max batch {cand['max_batch_size']}, delay "
        f"{cand['max_queue_delay_us']} us, preferred {cand['preferred_batch_size']}, threads "
        f"{cand['intra_op_threads']}" + (f", streams {cand['streams']}" if cand["streams"] else "")
    )


def search(
    control: ModelControl,
    model: str,
    base: mc.ModelConfig,
    cfg: SearchConfig,
    measure: Callable[[int], dict],
    repo: Path,
    log: Callable[[str], None] = print,
    largest_request: int = 1,
) -> dict:
    """Measure the candidates (`measure(concurrency)` measures the loaded one), restore the
    model's own config, and apply the winner if asked. No max batch sizes listed: the
    deployed one's alone."""
    if not cfg.max_batch_sizes:
        cfg = dataclasses.replace(cfg, max_batch_sizes=[base.max_batch_size])
    results: list[dict] = []
    stages = STAGES if cfg.staged else (KNOBS,)
    try:
        for n, varied in enumerate(stages, 1):
            best = pick(results, cfg.p99_ms)
            fixed = {k: best[k] for k in KNOBS} if best else None
            grid = _new(candidates(cfg, varied, fixed), base, [r["config"] for r in results])
            for i, (cand, config) in enumerate(grid, 1):
                control.load(model, config)
                points = [measure(c) for c in cfg.concurrency]
                mean = sum(p["throughput"] for p in points) / len(points)
                knobs = serving(config)  # as loaded: a preferred size >= max batch is dropped
                results.append(
                    {**{k: knobs[k] for k in KNOBS}, "stage": n, "throughput": mean,
                     "points": points,
                     "p50_ms": max(p["p50_ms"] for p in points),
                     "p99_ms": max(p["p99_ms"] for p in points),
                     "errors": sum(p["errors"] for p in points), "config": knobs,
                     "accepts_largest": config.max_batch_size >= largest_request}
                )  # fmt: skip
                log(
                    f"  [stage {n}, {i}/{len(grid)}] {_describe(cand)}: "
                    + ", ".join(
                        f"c{p['concurrency']} {p['throughput']:.0f}/s p99 {p['p99_ms']:.2f} ms"
                        for p in points
                    )
                )
    finally:
        control.load(model, base)  # back to the deployed config, whatever happened
    best = pick(results, cfg.p99_ms)
    outcome = {
        "model": model,
        "largest_request": largest_request,
        "concurrency": cfg.concurrency,
        "p99_budget_ms": cfg.p99_ms,
        "method": (
            f"{'Staged' if cfg.staged else 'Full grid'}: {len(results)} candidates, each "
            f"measured at c{', c'.join(map(str, cfg.concurrency))}; req/s is the mean over "
            "them, p50 and p99 the worst."
        ),
        "baseline": serving(base),
        "candidates": results,
        "best": best,
        "applied": None,
    }
    if best is not None and cfg.apply:
        path = write_config(repo, model, variation(base, **{k: best[k] for k in KNOBS}))
        outcome["applied"] = str(path)
        log(f"  applied the winner to {path}")
    return outcome
