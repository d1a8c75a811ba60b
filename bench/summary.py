"""The issue's targets as ratios, each with what it compares, and the one-paragraph verdict.

Every target is one function registered with `@target(...)` in TARGETS, together with its
operator, threshold, meaning, the reason it is missed when it is, and what limits the figure
on this machine's 2 cores. A key may hold `{c}`: the comparison concurrency
(`served.compare_concurrency`) it was measured at. Served points carry `path`: "tensor"
(tensors to a classifier: uint8 pixels or floats, as it takes them) or "raw" (encoded
images to the ensemble, bench.rawpath).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.stats import PERCENTILE_RULE

# Ours within this share of Model Analyzer's winner: its throughput, and its p99 as "equal".
ANALYZER_TOLERANCE = 0.05
INFO = "info"  # a figure shown beside a target, with no goal of its own


@dataclass(frozen=True)
class Figure:
    """A target's measured value (None: not measured; `detail` then says what it needs)."""

    value: float | None
    detail: str
    extra_ok: bool = True  # a second condition, e.g. p99 no worse


@dataclass(frozen=True)
class Facts:
    """What the target functions read from one run's results."""

    results: dict
    points: list[dict]
    rows: list[dict]  # in-process
    primary: str | None
    knobs: dict  # the primary variant's deployed serving knobs
    c: int  # comparison concurrency


@dataclass(frozen=True)
class Target:
    key: str  # may hold {c}
    op: str  # ">=", "<=", "within" (|x - 1| <= threshold) or INFO
    threshold: float | None
    meaning: str
    why_missed: str
    limits: str  # what bounds the figure on 2 shared cores
    measure: Callable[[Facts], Figure]

    def goal(self) -> str:
        if self.op == INFO:
            return "-"
        return (
            f"|x - 1| <= {self.threshold}" if self.op == "within" else f"{self.op} {self.threshold}"
        )

    def met(self, fig: Figure) -> bool | None:
        if fig.value is None or self.op == INFO:
            return None
        ok = {
            ">=": fig.value >= self.threshold,
            "<=": fig.value <= self.threshold,
            "within": abs(fig.value - 1) <= self.threshold,
        }[self.op]
        return ok and fig.extra_ok


TARGETS: dict[str, Target] = {}


def target(
    key: str, op: str, threshold: float | None, meaning: str, why_missed: str = "", limits: str = ""
):
    """Register the decorated function as the measurement of target `key`."""

    def register(fn: Callable[[Facts], Figure]) -> Callable[[Facts], Figure]:
        if key in TARGETS:
            raise ValueError(f"target {key!r} is registered twice")
        TARGETS[key] = Target(key, op, threshold, meaning, why_missed, limits, fn)
        return fn

    return register


def find_point(points: list[dict], **tags) -> dict | None:
    """The latest point whose fields equal `tags`."""
    return next((p for p in reversed(points) if all(p.get(k) == v for k, v in tags.items())), None)


def select(points: list[dict], **tags) -> list[dict]:
    """Every point whose fields equal `tags`, in measurement order."""
    return [p for p in points if all(p.get(k) == v for k, v in tags.items())]


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def where(p: dict) -> str:
    """Where a served point was measured, e.g. `http c4, 32 images a request`."""
    load = f"c{p['concurrency']}" if p["load"] == "closed" else f"{p['rate']:.0f}/s open loop"
    per = f", {p['batch']} images a request" if p["batch"] > 1 else ""
    return f"{p['protocol']} {load}{per}"


def _nearest_threads(rows: list[dict], threads: int) -> int | None:
    have = sorted({r["threads"] for r in rows})
    return min(have, key=lambda t: (abs(t - threads), t)) if have else None


def _inprocess(rows: list[dict], variant: str, threads: int) -> tuple[list[dict], int | None]:
    mine = [r for r in rows if r["variant"] == variant and r["kind"] == "onnx"]
    t = _nearest_threads(mine, threads)
    return [r for r in mine if r["threads"] == t], t


def best_of(items: list[dict], key: str = "images_per_s") -> dict | None:
    return max(items, key=lambda x: x[key], default=None)


def one_process_best(rows: list[dict], variant: str | None) -> dict | None:
    """pytest-benchmark's fastest row of `variant` (one process, any batch and threads)."""
    return best_of(
        [r for r in rows if r["variant"] == variant and r["kind"] == "onnx"], "throughput"
    )


def deployed_on(f: Facts) -> dict | None:
    """The primary variant's single-image HTTP point at the comparison concurrency."""
    return find_point(
        f.points,
        variant=f.primary,
        protocol="http",
        concurrency=f.c,
        config="deployed",
        batch=1,
        path="tensor",
    )


def fastapi_points(points: list[dict], c: int) -> list[dict]:
    """The FastAPI baseline's points at concurrency c, one per (workers, threads)."""
    latest: dict[tuple, dict] = {}
    for p in select(points, config="fastapi", concurrency=c):
        latest[(p.get("workers", 1), p.get("threads"))] = p
    return list(latest.values())


def paired(points: list[dict], first: str, second: str) -> list[tuple[dict, dict]]:
    """(config `first`, config `second`) points measured at the same concurrency in this run
    (what Bench.measure_alternately keeps of each)."""
    a = {p["concurrency"]: p for p in select(points, config=first)}
    b = {p["concurrency"]: p for p in select(points, config=second)}
    return [(a[c], b[c]) for c in sorted(a.keys() & b.keys())]


def analyzer_pairs(points: list[dict]) -> list[tuple[dict, dict]]:
    """(ours, Model Analyzer's) winner points measured at the same concurrency in this run."""
    return paired(points, "search_winner", "analyzer_winner")


# -- the targets ---------------------------------------------------------------------------


@target(
    "served_vs_inprocess",
    ">=",
    0.90,
    "served best images/s / in-process best, same artifact (1 process at its best batch and "
    "threads, or as many processes x threads as the deployed instances x threads)",
    "each served request pays HTTP/gRPC, Triton's Python-backend IPC and the client on the "
    "same cores the model needs; requests of several images spread that cost",
    limits="the model's kernels run as fast in the stubs as in process (perf); tritonserver "
    "(HTTP, copies of each request's tensors), the stubs' IPC and the load generator take "
    "the rest of the 2 cores (docs/bench.md, where the CPU goes)",
)
def _served_vs_inprocess(f: Facts) -> Figure:
    best = best_of(select(f.points, config="deployed", variant=f.primary, path="tensor"))
    one = one_process_best(f.rows, f.primary)
    if not (best and one):
        return Figure(None, "needs the inprocess and sweep sections")
    # Both baselines as (images/s, how it ran); the better one is compared.
    bases = [(one["throughput"], f"1 process, batch {one['batch']}, {one['threads']} thread(s)")]
    bases += [(r["images_per_s"], shape_label(r)) for r in f.results.get("tensor_inprocess") or []]
    top, how = max(bases)
    others = "; ".join(f"{h}: {ips:.0f}" for ips, h in bases if h != how)
    return Figure(
        best["images_per_s"] / top,
        f"{f.primary}: served {best['images_per_s']:.0f} images/s ({where(best)}) vs "
        f"in-process best {top:.0f} images/s ({how})" + (f"; also {others}" if others else ""),
    )


@target(
    "overhead_ms_c1",
    "<=",
    1.0,
    "served p50 at c1 - in-process batch-1 latency (ms)",
    "the per-request serving path, plus the dynamic batcher's wait (max_queue_delay) for a "
    "batch that never forms at concurrency 1",
    limits="one request at a time: the HTTP round trip and two IPC hops, not the cores",
)
def _overhead_ms_c1(f: Facts) -> Figure:
    c1, rows = overhead_sides(f)
    if not (c1 and rows):
        return Figure(None, "needs inprocess with batch 1 and the sweep at c1")
    b1 = rows[0]
    return Figure(
        c1["p50_ms"] - b1["median_ms"],
        f"{f.primary}: served p50 {c1['p50_ms']:.3f} ms (HTTP c1) - in-process "
        f"{b1['median_ms']:.3f} ms (batch 1, {b1['threads']} thread(s)); the server queue (the "
        f"dynamic batcher's wait) is {_fmt_ms(c1.get('queue_ms'))} of it",
    )


def overhead_sides(f: Facts) -> tuple[dict | None, list[dict]]:
    """overhead_ms_c1's two sides: the served point (HTTP c1, one image) and the in-process
    rows whose per-image times it is compared with (the primary at batch 1 and its deployed
    threads)."""
    c1 = find_point(f.points, variant=f.primary, protocol="http", concurrency=1,
                    config="deployed", batch=1, path="tensor")  # fmt: skip
    b1 = _batch_one(f, f.primary, f.knobs.get("intra_op_threads", 1))
    return c1, [b1] if b1 else []


def _batch_one(f: Facts, variant: str | None, threads: int) -> dict | None:
    """`variant`'s in-process batch-1 row at the threads nearest `threads`."""
    one, _ = _inprocess(f.rows, variant, threads)
    return next((r for r in one if r["batch"] == 1), None)


def per_image_ms(row: dict) -> float:
    """Median ms an image of an in-process row (a model call of `batch` images, or one
    raw-path step over `batch` files)."""
    return row["median_ms"] / row["batch"]


@target(
    "dynbatch_gain_c{c}",
    ">=",
    1.3,
    "dynamic batching on / off throughput at the comparison concurrency",
    "batching saves per-execution cost only; with a model this cheap the per-request cost "
    "(parsing, IPC, client) dominates either way",
    limits="with batching off each request is its own execution; the 2 cores then spend more "
    "of their time on per-execution work",
)
def _dynbatch_gain(f: Facts) -> Figure:
    on = deployed_on(f)
    off = find_point(f.points, variant=f.primary, concurrency=f.c, config="no_dynamic_batching")
    if not (on and off and off["throughput"] > 0):
        return Figure(None, "needs the dynbatch section")
    return Figure(
        on["throughput"] / off["throughput"],
        f"c{f.c}: on {on['throughput']:.0f}/s (avg batch {on.get('avg_batch')}), off "
        f"{off['throughput']:.0f}/s",
    )


@target(
    "triton_vs_fastapi_c{c}",
    ">=",
    2.0,
    "Triton / the best FastAPI configuration (same engine, Triton's total threads), p99 no worse",
    "both servers spend most of a request outside the model on 2 cores; Triton's batching "
    "gain is eaten by its Python-backend IPC",
    limits="both servers and the load generator share the 2 cores; FastAPI's Python request "
    "handling is its ceiling",
)
def _triton_vs_fastapi(f: Facts) -> Figure:
    on = deployed_on(f)
    api = best_of(fastapi_points(f.points, f.c), "throughput")
    if not (on and api and api["throughput"] > 0):
        return Figure(None, "needs the fastapi section and the HTTP point at the comparison c")
    p99_ok = on["p99_ms"] <= api["p99_ms"]
    others = "; ".join(
        f"{p['workers']} x {p['threads']}: {p['throughput']:.0f}/s p99 {p['p99_ms']:.2f} ms"
        for p in fastapi_points(f.points, f.c)
        if p is not api
    )
    return Figure(
        on["throughput"] / api["throughput"],
        f"c{f.c}: Triton ({f.knobs.get('instances')} instance(s) x "
        f"{f.knobs.get('intra_op_threads')} thread(s)) {on['throughput']:.0f}/s p99 "
        f"{on['p99_ms']:.2f} ms vs FastAPI's best ({api['workers']} worker(s) x "
        f"{api['threads']} thread(s)) {api['throughput']:.0f}/s p99 {api['p99_ms']:.2f} ms (p99 "
        f"{'no worse' if p99_ok else 'WORSE'})" + (f"; FastAPI also {others}" if others else ""),
        p99_ok,
    )


@target(
    "vs_perf_analyzer",
    "within",
    0.10,
    "our throughput / perf_analyzer's at our best point",
    "the two clients differ in CPU cost (client cores beside each), and on 2 cores client CPU "
    "is server CPU lost",
    limits="each client's own CPU (client cores) is taken from the server on 2 cores",
)
def _vs_perf_analyzer(f: Facts) -> Figure:
    checks = f.results.get("perf_analyzer") or []
    pa = next((x for x in checks if x["best"]), None)
    if not (pa and pa["images_per_s"] > 0):
        return Figure(None, "needs the perf_analyzer section")
    others = "; ".join(
        f"at c{x['concurrency']} x{x['batch']}: {x['ours_images_per_s'] / x['images_per_s']:.2f}"
        f" (client cores ours {x['ours_client_cores']}, perf_analyzer {x['client_cores']})"
        for x in checks
        if x is not pa
    )
    return Figure(
        pa["ours_images_per_s"] / pa["images_per_s"],
        f"{pa['protocol']} c{pa['concurrency']} x{pa['batch']} images: ours "
        f"{pa['ours_images_per_s']:.0f} vs perf_analyzer {pa['images_per_s']:.0f} images/s; "
        f"p50 {pa['ours_p50_ms']:.2f} vs {pa['p50_ms']:.2f} ms"
        + (f"; also {others}" if others else ""),
    )


def _eager_vs(f: Facts, batch1: bool) -> Figure:
    eager = [r for r in f.rows if r["kind"] == "eager"]
    base = (
        next((r for r in eager if r["batch"] == 1), None)
        if batch1
        else best_of(eager, "throughput")
    )
    served = best_of(select(f.points, config="deployed", path="tensor"))
    if not (base and served):
        return Figure(None, "needs the eager baseline (checkpoint) and served points")
    return Figure(
        served["images_per_s"] / base["throughput"],
        f"served {served['variant']} {served['images_per_s']:.0f} images/s ({where(served)}) "
        f"vs PyTorch eager FP32 at batch {base['batch']} {base['throughput']:.0f} images/s "
        f"({base['threads']} torch thread(s))",
    )


@target(
    "optimized_vs_eager",
    ">=",
    10.0,
    "best served images/s / PyTorch eager FP32 at its own best batch",
    "eager here is already fast at this input size",
    limits="the served figure's ceiling above (per-request cost); eager's is torch's "
    "per-call overhead",
)
def _optimized_vs_eager(f: Facts) -> Figure:
    return _eager_vs(f, batch1=False)


@target(
    "optimized_vs_eager_batch1",
    INFO,
    None,
    "best served images/s / PyTorch eager FP32 at batch 1 (not like for like: shown for "
    "reference beside optimized_vs_eager)",
    limits="as optimized_vs_eager; eager at batch 1 pays torch's per-call overhead per image",
)
def _optimized_vs_eager_batch1(f: Facts) -> Figure:
    return _eager_vs(f, batch1=True)


@target(
    "search_vs_model_analyzer",
    ">=",
    1 - ANALYZER_TOLERANCE,
    "our config search's winner / Model Analyzer's, throughput re-measured by our load "
    f"generator in this run (lowest over the concurrencies), p99 no worse than "
    f"{ANALYZER_TOLERANCE:.0%} above its",
    "Model Analyzer's grid holds configurations ours did not try; see the search tables",
    limits="configurations within noise of each other: other processes' load on the 2 cores "
    "moves a figure more than a knob does",
)
def _search_vs_model_analyzer(f: Facts) -> Figure:
    pairs = analyzer_pairs(f.points)
    if not pairs:
        return Figure(None, "needs the analyzer section and a Model Analyzer result")
    ratios = [ours["throughput"] / theirs["throughput"] for ours, theirs in pairs]
    p99_ok = all(o["p99_ms"] <= t["p99_ms"] * (1 + ANALYZER_TOLERANCE) for o, t in pairs)
    return Figure(
        min(ratios),
        "; ".join(
            f"c{o['concurrency']}: ours {o['throughput']:.0f}/s p99 {o['p99_ms']:.2f} ms vs "
            f"Model Analyzer's {t['throughput']:.0f}/s p99 {t['p99_ms']:.2f} ms"
            for o, t in pairs
        ),
        p99_ok,
    )


def engine_pairs(points: list[dict]) -> list[tuple[dict, dict]]:
    """(ONNX Runtime, OpenVINO) points of the engines section at the same concurrency."""
    return paired(points, "engine_onnxruntime", "engine_openvino")


def _engines_text(pairs: list[tuple[dict, dict]]) -> str:
    return "; ".join(
        f"c{o['concurrency']}: ONNX Runtime {o['throughput']:.0f}/s p99 {o['p99_ms']:.2f} ms, "
        f"OpenVINO {v['throughput']:.0f}/s p99 {v['p99_ms']:.2f} ms"
        for o, v in pairs
    )


@target(
    "engine_gain",
    ">=",
    1.5,
    "served images/s of the primary artifact on the engine optimize deployed it on / the same "
    "artifact on ONNX Runtime, same instances, threads and batching (lowest over the "
    "concurrencies; 1.0 when ONNX Runtime is the deployed engine)",
    "the deployed engine is ONNX Runtime, or OpenVINO's kernels gain less on this model",
    limits="the Python backend's per-request cost and the client share the cores with either "
    "engine, so a served gain is below the in-process one (optimize's report)",
)
def _engine_gain(f: Facts) -> Figure:
    e = f.results.get("engines")
    pairs = engine_pairs(f.points)
    if not e or not pairs:
        return Figure(None, "needs the engines section")
    chosen = [v if e["deployed"] == "openvino" else o for o, v in pairs]
    ratios = [c["throughput"] / o["throughput"] for c, (o, _) in zip(chosen, pairs, strict=True)]
    detail = f"{e['variant']} deployed on {e['deployed']}; {_engines_text(pairs)}"
    return Figure(min(ratios), detail)


@target(
    "openvino_vs_onnxruntime",
    INFO,
    None,
    "served images/s of the primary artifact on OpenVINO / on ONNX Runtime, same instances, "
    "threads and batching, whichever engine is deployed (lowest over the concurrencies)",
    limits="as engine_gain: the per-request serving cost is the same on both engines and "
    "dilutes the difference between their kernels",
)
def _openvino_vs_onnxruntime(f: Facts) -> Figure:
    pairs = engine_pairs(f.points)
    if not pairs:
        return Figure(None, "needs the engines section")
    return Figure(min(v["throughput"] / o["throughput"] for o, v in pairs), _engines_text(pairs))


# -- the raw path: encoded images to the ensemble (bench.rawpath) ----------------------------


def _raw_variant(f: Facts) -> str | None:
    """The classifier variant the ensemble feeds (the tensor path is compared on it)."""
    return (f.results.get("ensemble") or {}).get("variant")


def _per_image_ms(f: Facts, kind: str) -> float | None:
    """Median ms per image of an in-process raw-path step (decode, preprocess, model_input)."""
    row = next((r for r in f.rows if r["kind"] == kind), None)
    return per_image_ms(row) if row else None


def _raw_point(f: Facts, c: int, protocol: str = "http") -> dict | None:
    return find_point(
        f.points, path="raw", config="deployed", protocol=protocol, concurrency=c, batch=1
    )


def shape_label(r: dict) -> str:
    return f"{r['workers']} process(es) x {r['threads']} thread(s), batch {r['batch']}"


@target(
    "raw_vs_inprocess",
    ">=",
    0.80,
    "best served raw-path images/s / in-process contract.model_input + the deployed model on "
    "the same images and cores (the best of 1 process at the model's best batch and threads, "
    "and one process a core)",
    "the raw path pays HTTP, the ensemble's two Python-backend IPC hops and the load generator "
    "on the cores that decode; decoding itself is the same work either way",
    limits="decoding: contract.preprocess is single-threaded Python per image, so the "
    "preprocess instances (processes) and the in-process workers are what use both cores",
)
def _raw_vs_inprocess(f: Facts) -> Figure:
    best = best_of(select(f.points, path="raw", config="deployed"))
    base = best_of(f.results.get("raw_inprocess") or [])
    if not (best and base):
        return Figure(None, "needs the inprocess and raw sections and an ensemble")
    others = "; ".join(
        f"{shape_label(r)}: {r['images_per_s']:.0f}"
        for r in f.results["raw_inprocess"]
        if r is not base
    )
    return Figure(
        best["images_per_s"] / base["images_per_s"],
        f"served {best['images_per_s']:.0f} images/s ({where(best)}) vs in-process "
        f"{base['images_per_s']:.0f} images/s ({shape_label(base)}, {base['engine']})"
        + (f"; in-process also {others}" if others else ""),
    )


@target(
    "raw_overhead_ms_c1",
    "<=",
    1.5,
    "raw-path p50 at c1 (HTTP, one encoded image) - (in-process contract.model_input, the "
    "server's preprocessing, + the model at batch 1), ms",
    "a request crosses HTTP, the ensemble scheduler and two Python-backend IPC hops; each "
    "copies the tensor between processes",
    limits="one request at a time: latency of the serving path, not the cores",
)
def _raw_overhead_ms_c1(f: Facts) -> Figure:
    c1, rows = raw_overhead_sides(f)
    if not (c1 and rows):
        return Figure(None, "needs the raw section at c1 and inprocess (model_input, batch 1)")
    pre, b1 = (per_image_ms(r) for r in rows)
    variant, t1 = rows[1]["variant"], rows[1]["threads"]
    steps = ", ".join(
        f"{step} queue {c1.get(f'{step}_queue_ms') or 0:.3f} + compute "
        f"{c1.get(f'{step}_compute_infer_ms') or 0:.3f} ms"
        for step in ("preprocess", "classifier")
    )
    return Figure(
        c1["p50_ms"] - pre - b1,
        f"served p50 {c1['p50_ms']:.3f} ms (HTTP c1) - (contract.model_input {pre:.3f} ms + "
        f"{variant} batch 1 {b1:.3f} ms, {t1} thread(s)); in the server: {steps}",
    )


def raw_overhead_sides(f: Facts) -> tuple[dict | None, list[dict]]:
    """raw_overhead_ms_c1's two sides: the raw point (HTTP c1, one image) and the in-process
    rows whose per-image times add up to the same work (contract.model_input, then the
    ensemble's classifier at batch 1 and its deployed threads); [] if either is missing."""
    variant = _raw_variant(f)
    threads = (f.results["variants"].get(variant) or {}).get("intra_op_threads", 1)
    pre = next((r for r in f.rows if r["kind"] == "model_input"), None)
    b1 = _batch_one(f, variant, threads)
    return _raw_point(f, 1), [pre, b1] if pre and b1 else []


@target(
    "vs_perf_analyzer_raw",
    "within",
    0.10,
    "our raw-path throughput / perf_analyzer's on the same ensemble and images (BYTES from "
    "--input-data) at our best raw point",
    "the two clients differ in CPU cost (client cores beside each)",
    limits="each client's own CPU is taken from decoding on 2 cores",
)
def _vs_perf_analyzer_raw(f: Facts) -> Figure:
    checks = f.results.get("perf_analyzer_raw") or []
    pa = next((x for x in checks if x["best"]), None)
    if not (pa and pa["images_per_s"] > 0):
        return Figure(None, "needs the raw and perf_analyzer sections")
    others = "; ".join(
        f"at c{x['concurrency']} x{x['batch']}: {x['ours_images_per_s'] / x['images_per_s']:.2f}"
        for x in checks
        if x is not pa
    )
    return Figure(
        pa["ours_images_per_s"] / pa["images_per_s"],
        f"{pa['protocol']} c{pa['concurrency']} x{pa['batch']} images: ours "
        f"{pa['ours_images_per_s']:.0f} vs perf_analyzer {pa['images_per_s']:.0f} images/s "
        f"(client cores ours {pa['ours_client_cores']}, perf_analyzer {pa['client_cores']})"
        + (f"; also {others}" if others else ""),
    )


@target(
    "preprocess_vs_decode",
    "<=",
    2.0,
    "in-process contract.preprocess / bare Pillow decode, per image, on the raw path's test "
    "images (photo224: 224x224 JPEGs at model size)",
    "the mode conversion, resize and normalisation around the decode cost more than it",
    limits="one core, one image at a time: Pillow's decoder and numpy's arithmetic",
)
def _preprocess_vs_decode(f: Facts) -> Figure:
    pre, decode = _per_image_ms(f, "preprocess"), _per_image_ms(f, "decode")
    if pre is None or not decode:
        return Figure(None, "needs the inprocess section and an ensemble's test images")
    row = next(r for r in f.rows if r["kind"] == "preprocess")
    return Figure(
        pre / decode,
        f"contract.preprocess {pre:.4f} ms vs Pillow decode {decode:.4f} ms per image, over "
        f"{row['batch']} test images",
    )


@target(
    "raw_vs_tensor_c{c}",
    INFO,
    None,
    "raw-path requests/s / tensor-path requests/s on the same classifier, one image a request "
    "over HTTP at the comparison concurrency (decoding is work the tensor path leaves to a "
    "client elsewhere: not expected to be 1)",
    limits="on 2 shared cores decoding takes the cores the classifier and the server need; "
    "see the share the preprocess stubs used",
)
def _raw_vs_tensor(f: Facts) -> Figure:
    raw = _raw_point(f, f.c)
    variant = _raw_variant(f)
    tensor = find_point(
        f.points, path="tensor", config="deployed", protocol="http", concurrency=f.c, batch=1,
        variant=variant,
    )  # fmt: skip
    if not (raw and tensor and tensor["throughput"] > 0):
        return Figure(None, "needs the raw section (it measures the tensor point beside it)")
    cores = f.results["machine"]["cores"]
    decode = raw.get("preprocess_cores")
    split = (
        f"; on the raw path decoding (the preprocess stubs) used {decode:.2f} of the {cores} "
        f"cores ({decode / cores:.0%}), the classifier's stubs "
        f"{raw.get('classifier_cores') or 0:.2f}, "
        f"tritonserver itself {raw.get('server_cores') or 0:.2f}, the load generator "
        f"{raw['noise'].get('client_cores') or 0:.2f}; on the tensor path the server and client "
        f"used {tensor['noise'].get('our_cores') or 0:.2f} cores in all"
        if decode is not None
        else ""
    )
    return Figure(
        raw["throughput"] / tensor["throughput"],
        f"c{f.c}: raw {raw['throughput']:.0f}/s p99 {raw['p99_ms']:.2f} ms vs tensor "
        f"{tensor['throughput']:.0f}/s p99 {tensor['p99_ms']:.2f} ms ({variant}){split}",
    )


# -- summary -------------------------------------------------------------------------------


def facts(results: dict) -> Facts:
    primary = results.get("primary")
    return Facts(
        results=results,
        points=results["points"],
        rows=results["inprocess"],
        primary=primary,
        knobs=results["variants"].get(primary, {}) if primary else {},
        c=results["config"]["served"]["compare_concurrency"],
    )


def paired_figure(fig: Figure, pair: dict | None) -> Figure:
    """The median of the paired rounds (bench.paired) in place of the unpaired figure, which
    the detail keeps."""
    if pair is None or fig.value is None:
        return fig
    return Figure(
        pair["median"],
        f"median of {len(pair['rounds'])} paired rounds of {pair['how']}, range "
        f"{pair['min']:.2f} to {pair['max']:.2f} (A: {pair['a']}; B: {pair['b']}; back to "
        "back, order alternating); "
        f"unpaired {fig.value:.2f}: {fig.detail}",
        fig.extra_ok,
    )


def targets(results: dict) -> dict:
    """key -> {value, target, met, meaning, detail, paired}; value None (with why) when not
    measured; where the paired section ran, value is its median and `paired` says more."""
    f = facts(results)
    out = {}
    for t in TARGETS.values():
        key = t.key.format(c=f.c)
        unpaired = t.measure(f)
        pair = (results.get("paired") or {}).get(key)
        fig = paired_figure(unpaired, pair)
        out[key] = {
            "value": None if fig.value is None else round(fig.value, 3),
            "target": t.goal(),
            "met": t.met(fig),
            "meaning": t.meaning,
            "detail": fig.detail,
            "paired": None
            if fig is unpaired
            else {
                "rounds": len(pair["rounds"]),
                "min": pair["min"],
                "max": pair["max"],
                "unpaired": round(unpaired.value, 3),
            },
        }
    return out


def _why_missed(key: str, c: int) -> str:
    return next(t.why_missed for t in TARGETS.values() if t.key.format(c=c) == key)


def _is_info(key: str, c: int) -> bool:
    return any(t.op == INFO for t in TARGETS.values() if t.key.format(c=c) == key)


def fastapi_baseline(results: dict) -> dict | None:
    """The FastAPI configurations measured, the best, and Triton's resources beside them."""
    f = facts(results)
    measured = fastapi_points(f.points, f.c)
    if not measured:
        return None
    best = best_of(measured, "throughput")
    shape = [
        {k: p.get(k) for k in ("workers", "threads", "throughput", "p50_ms", "p99_ms")}
        for p in measured
    ]
    triton_threads = f.knobs.get("instances", 1) * f.knobs.get("intra_op_threads", 1)
    return {
        "concurrency": f.c,
        "configs": shape,
        "best": {"workers": best["workers"], "threads": best["threads"]},
        "triton": {
            "instances": f.knobs.get("instances"),
            "intra_op_threads": f.knobs.get("intra_op_threads"),
        },
        "same_total_threads": all(p["workers"] * p["threads"] == triton_threads for p in measured),
    }


def replicas_summary(results: dict) -> dict | None:
    """Throughput of 1 and N replicas on these same cores, each path and concurrency, and what
    N replicas read against 1: below 1 here (shared cores); on N machines, N x the 1-replica
    figure is the prediction."""
    points = select(results["points"], section="replicas")
    if not points:
        return None
    one = {(p["path"], p["concurrency"]): p["throughput"] for p in points if p["replicas"] == 1}
    rows = [
        {"replicas": p["replicas"], "path": p["path"], "concurrency": p["concurrency"],
         "throughput": round(p["throughput"], 1), "p99_ms": round(p["p99_ms"], 2),
         "vs_one_replica": (
             round(p["throughput"] / one[p["path"], p["concurrency"]], 3)
             if one.get((p["path"], p["concurrency"])) else None
         )}
        for p in points
    ]  # fmt: skip
    return {
        "cores": results["machine"]["cores"],
        "points": rows,
        "requests_per_replica": results.get("replicas"),
        "note": "replicas share these cores: the cost of N servers, not a gain; on N machines "
        "predict N x the 1-replica throughput",
    }


def noise_summary(results: dict) -> dict:
    loads = [p["noise"] for p in results["points"]] + [r["noise"] for r in results["inprocess"]]
    busy = [p for p in results["points"] if p.get("busy")] + [
        r for r in results["inprocess"] if r.get("busy")
    ]
    probes = [n["probe_ms"] for n in loads if n.get("probe_ms")]
    return {
        "measurements": len(loads),
        "probe_ms_min": min(probes, default=None),
        "probe_ms_max": max(probes, default=None),
        # slowest / fastest fixed-work probe: how much the host's speed moved over the run
        "host_drift": round(max(probes) / min(probes), 2) if len(probes) > 1 else None,
        "busy_after_retries": len(busy),
        "max_other_cores": max((n["other_cores"] for n in loads), default=None),
        "mean_other_cores": (
            round(sum(n["other_cores"] for n in loads) / len(loads), 3) if loads else None
        ),
        "busy_threshold_cores": results["config"]["noise"]["busy_cores"],
    }


def verdict(results: dict, tgts: dict) -> str:
    """One paragraph: the headline, where the time goes, what limits each missed target."""
    f = facts(results)
    deployed = select(f.points, config="deployed", path="tensor")
    if not deployed:
        return "No served measurement was made, so there is no verdict on serving."
    best = best_of(deployed)
    single = best_of(select(deployed, batch=1), "throughput")
    on = deployed_on(f)
    parts = [
        f"On {results['machine']['cores']} CPU cores shared by client, server and backend "
        f"stubs, the best served result is {best['images_per_s']:.0f} images/s "
        f"({best['variant']}, {where(best)}, p99 {best['p99_ms']:.2f} ms)"
    ]
    if single is not None and single is not best:
        parts.append(
            f"; with one image a request, {single['throughput']:.0f} requests/s "
            f"({single['variant']}, {where(single)}, p99 {single['p99_ms']:.2f} ms)"
        )
    parts.append(".")
    raw = best_of(select(f.points, path="raw", config="deployed"))
    if raw is not None:
        parts.append(
            f" Through the ensemble with encoded test images (the path users call) the best is "
            f"{raw['images_per_s']:.0f} images/s ({where(raw)}, p99 {raw['p99_ms']:.2f} ms)."
        )
    if on and on.get("server_ms") is not None:
        parts.append(
            f" For {f.primary} over HTTP at c{f.c}, a request takes {on['mean_ms']:.2f} ms on "
            f"average, of which the server accounts {on['server_ms']:.2f} ms "
            f"({on['queue_ms']:.2f} queued, {on['compute_infer_ms']:.2f} in the backend at an "
            f"average batch of {on['avg_batch']}); the rest is the client, HTTP and the Python "
            f"backend's IPC, and the load generator itself used "
            f"{on['noise'].get('client_cores', 0):.2f} cores."
        )
    goals = {k: t for k, t in tgts.items() if not _is_info(k, f.c)}
    met = [k for k, t in goals.items() if t["met"]]
    missed = [k for k, t in goals.items() if t["met"] is False]
    absent = [k for k, t in goals.items() if t["met"] is None]
    parts.append(f" Targets met: {', '.join(met) or 'none'}.")
    if missed:
        parts.append(" Missed: " + "; ".join(f"{k}: {_why_missed(k, f.c)}" for k in missed) + ".")
    if absent:
        parts.append(f" Not measured: {', '.join(absent)}.")
    parts.append(f" Latencies are {PERCENTILE_RULE}.")
    noise = noise_summary(results)
    if noise["busy_after_retries"]:
        parts.append(
            f" {noise['busy_after_retries']} of {noise['measurements']} measurements had other "
            f"processes using more than {noise['busy_threshold_cores']} cores even after retries "
            f"(mean {noise['mean_other_cores']}, max {noise['max_other_cores']}): those numbers "
            "are noise-limited, rerun on a quiet machine."
        )
    return "".join(parts)
