"""Serving config search, what Model Analyzer's brute-force mode does, without Docker or a GPU.

Grid: instance count x max_queue_delay x preferred batch sizes x ORT intra-op threads per
instance. Each candidate is loaded into the running server through the load API with a
config override (the repository is untouched), measured at one concurrency, and the best
throughput whose p99 fits the budget wins. `--apply` writes the winner's config.pbtxt.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from bench.config import SearchConfig
from bench.repository import serving, to_json, variation, write_config


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


def candidates(cfg: SearchConfig) -> list[dict]:
    grid = itertools.product(
        cfg.instances, cfg.max_queue_delay_us, cfg.preferred_batch_sizes, cfg.threads
    )
    return [
        {
            "instances": i,
            "max_queue_delay_us": d,
            "preferred_batch_size": list(p),
            "intra_op_threads": t,
        }
        for i, d, p, t in grid
    ]


def pick(results: list[dict], p99_ms: float) -> dict | None:
    """Highest throughput among error-free results whose p99 is within the budget."""
    fits = [r for r in results if r["errors"] == 0 and r["p99_ms"] <= p99_ms]
    return max(fits, key=lambda r: r["throughput"], default=None)


def search(
    control: ModelControl,
    model: str,
    base: mc.ModelConfig,
    cfg: SearchConfig,
    measure: Callable[[], dict],
    repo: Path,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure every candidate, restore the model's own config, and apply the winner if asked."""
    results = []
    grid = candidates(cfg)
    try:
        for n, cand in enumerate(grid, 1):
            config = variation(base, **cand)
            control.load(model, config)
            point = measure()
            results.append({**cand, **point, "config": serving(config)})
            log(
                f"  [{n}/{len(grid)}] instances {cand['instances']}, delay "
                f"{cand['max_queue_delay_us']} us, preferred {cand['preferred_batch_size']}, "
                f"threads {cand['intra_op_threads']}: {point['throughput']:.0f}/s, "
                f"p99 {point['p99_ms']:.2f} ms"
            )
    finally:
        control.load(model, base)  # back to the deployed config, whatever happened
    best = pick(results, cfg.p99_ms)
    outcome = {
        "model": model,
        "concurrency": cfg.concurrency,
        "p99_budget_ms": cfg.p99_ms,
        "baseline": serving(base),
        "candidates": results,
        "best": best,
        "applied": None,
    }
    if best is not None and cfg.apply:
        keys = ("instances", "max_queue_delay_us", "preferred_batch_size", "intra_op_threads")
        path = write_config(repo, model, variation(base, **{k: best[k] for k in keys}))
        outcome["applied"] = str(path)
        log(f"  applied the winner to {path}")
    return outcome
