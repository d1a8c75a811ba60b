"""1 and N tritonserver replicas on the same cores (serve.replicas.start_replicas), the load
generator sending each request to the next replica in turn, as a client given their URLs
does (client/infer.py --url A,B).

On one machine the replicas share its cores: N replicas read at most what one does, less the
cost of N servers' threads and stubs competing. That cost is what this section shows. N
machines each have their own cores: N x the one-replica figure is the prediction there, less
what the network and a load balancer add (not measured here).
"""

from __future__ import annotations

from bench.loadgen import Load, TritonTarget
from serve.replicas import start_replicas


def run(bench) -> None:
    cfg = bench.cfg.replicas
    v = bench.raw.variant if bench.raw is not None and bench.raw.variant else bench.primary()
    for n in cfg.counts:
        bench.log(f"  {n} replica(s) of {', '.join(bench.served_models())}")
        group = start_replicas(
            bench.cfg.repo,
            n,
            log_dir=bench.out / f"replicas-{n}",
            models=bench.served_models(),
            ready_timeout=bench.cfg.served.ready_timeout_s,
        )
        try:
            measure(bench, v, n, group.http_url, group.grpc_url)
            served = [_served(server.http_url, v.model) for server in group.servers]
        finally:
            group.stop()
        bench.results.setdefault("replicas", []).append(
            {"replicas": n, "classifier": v.model, "requests_per_replica": served}
        )
        bench.log(f"  requests {v.model} served, replica by replica: {served}")


def _served(http_url: str, model: str) -> int:
    """Requests `model` answered on one replica so far: the spread over the replicas."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    try:
        stats = client.get_inference_statistics(model)
    finally:
        client.close()
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def measure(bench, v, n: int, http_urls: str, grpc_urls: str) -> None:
    """The raw and the tensor path at each concurrency, over the replicas' (comma-separated)
    URLs, one image a request over HTTP."""
    for c in bench.cfg.replicas.concurrency:
        tags = dict(section="replicas", variant=v.name, protocol="http", config="replicas",
                    replicas=n)  # fmt: skip
        if bench.raw is not None:
            raw = bench.raw.target(None, "http", 1, (http_urls, grpc_urls))
            bench.point(raw, Load("closed", c), path="raw", **tags)
        bench.point(
            lambda: TritonTarget(
                http_urls, grpc_urls, "http", v.model, bench.spec, bench.sample(1)
            ),
            Load("closed", c),
            **tags,
        )
