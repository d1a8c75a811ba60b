"""report.md, headline.md, summary.json, raw CSVs and the plots of one bench run."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.noise import HOST_DRIFT  # noqa: E402
from bench.stats import PERCENTILE_RULE  # noqa: E402
from bench.summary import (  # noqa: E402
    TARGETS,
    analyzer_pairs,
    engine_pairs,
    fastapi_baseline,
    noise_summary,
    replicas_summary,
    select,
    targets,
    verdict,
)
from contract.atomic import atomic_write_json, atomic_write_text, staged_file  # noqa: E402

# fmt: off
POINT_COLUMNS = (
    "section", "path", "variant", "protocol", "config", "pair", "replicas",
    "preprocess_instances", "load", "concurrency", "rate", "batch",
    "throughput", "images_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
    "requests", "errors", "dropped", "stable",
    "windows", "server_ms", "queue_ms", "compute_input_ms", "compute_infer_ms",
    "compute_output_ms", "avg_batch", "other_cores", "our_cores", "client_cores", "busy",
    "attempts", "workers", "threads",
    "preprocess_queue_ms", "preprocess_compute_infer_ms", "preprocess_avg_batch",
    "classifier_queue_ms", "classifier_compute_infer_ms", "classifier_avg_batch",
    "preprocess_cores", "classifier_cores", "server_cores",
)
INPROCESS_COLUMNS = (
    "variant", "kind", "batch", "threads", "median_ms", "mean_ms", "stddev_ms", "rounds",
    "throughput", "other_cores", "busy",
)
# fmt: on


MAX_WARNINGS = 12


def _fmt(value, spec: str = "{:.2f}") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return spec.format(value)
    return str(value).replace("|", "\\|")  # a pipe inside a cell would end it


def _flat(row: dict) -> dict:
    return {**row, **{k: v for k, v in row.get("noise", {}).items() if k != "seconds"}}


def _csv(path: Path, rows: list[dict], columns) -> Path:
    with staged_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _flat(r).get(k) for k in columns})
    return path


@dataclass(frozen=True)
class Col:
    """One column of a markdown table: header, the row's key (or a function of the row),
    and the format of its float cells."""

    header: str
    key: str | Callable[[dict], object]
    fmt: str = "{:.2f}"

    def cell(self, row: dict) -> str:
        value = self.key(row) if callable(self.key) else row.get(self.key)
        return _fmt(value, self.fmt)


def _table(columns: Sequence[Col], rows: Sequence[dict]) -> list[str]:
    return [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows),
        "",
    ]


MARK = {True: "met", False: "**missed**", None: "not measured"}


def _mark(t: dict) -> str:
    return "-" if t["target"] == "-" else MARK[t["met"]]


TARGET_COLUMNS = (
    Col("key", lambda t: f"`{t['key']}`"),
    Col("value", "value", "{}"),
    Col("target", "target"),
    Col("", _mark),
    Col("what", "detail"),
)
HEADLINE_COLUMNS = (
    Col("target", lambda t: f"`{t['key']}`"),
    Col("value", "value", "{}"),
    Col("goal", "target"),
    Col("", _mark),
)
# A served point's figures, after the columns that say where it was measured.
POINT_STATS = (
    Col("req/s", "throughput", "{:.1f}"),
    Col("img/s", "images_per_s", "{:.0f}"),
    Col("p50", "p50_ms"),
    Col("p90", "p90_ms"),
    Col("p95", "p95_ms"),
    Col("p99 ms", "p99_ms"),
    Col("errors", "errors"),
    Col("queue", "queue_ms"),
    Col("infer ms", "compute_infer_ms"),
    Col("server batch", "avg_batch"),
    Col("client cores", lambda p: p["noise"].get("client_cores")),
    Col("other cores", lambda p: p["noise"]["other_cores"]),
    Col("stable", "stable"),
)
# A point of Bench.measure_alternately (the analyzer and engines sections)
ALTERNATE_STATS = (
    POINT_STATS[0],
    Col("p50", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("errors", "errors"),
    Col("server batch", "avg_batch"),
    Col("other cores", lambda p: p["noise"]["other_cores"]),
)
CROSS_CHECK_COLUMNS = (
    Col("protocol", "protocol"),
    Col("c", "concurrency"),
    Col("img/req", "batch"),
    Col("tool", "tool"),
    Col("img/s", "images_per_s", "{:.0f}"),
    Col("p50", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("client cores", "client_cores"),
)
SEARCH_COLUMNS = (
    Col("stage", "stage"),
    Col("instances", "instances"),
    Col("max batch", "max_batch_size"),
    Col("delay us", "max_queue_delay_us"),
    Col("preferred", lambda r: str(r["preferred_batch_size"])),
    Col("threads", "intra_op_threads"),
    Col("streams", "streams"),
    Col("req/s", "throughput", "{:.1f}"),
    Col("p50", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("errors", "errors"),
    Col("accepts largest", "accepts_largest"),
    Col("best", "best"),
)
# A raw-path point: where its time and CPU went, step by step (bench.loadgen.EnsembleTarget).
RAW_STATS = (
    Col("req/s", "throughput", "{:.1f}"),
    Col("img/s", "images_per_s", "{:.0f}"),
    Col("p50", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("errors", "errors"),
    Col("pre queue", "preprocess_queue_ms"),
    Col("pre infer ms", "preprocess_compute_infer_ms"),
    Col("pre batch", "preprocess_avg_batch"),
    Col("cls queue", "classifier_queue_ms"),
    Col("cls infer ms", "classifier_compute_infer_ms"),
    Col("cls batch", "classifier_avg_batch"),
    Col("decode cores", "preprocess_cores"),
    Col("cls cores", "classifier_cores"),
    Col("triton cores", "server_cores"),
    Col("client cores", lambda p: p["noise"].get("client_cores")),
    Col("other cores", lambda p: p["noise"]["other_cores"]),
    Col("stable", "stable"),
)
PIPELINE_COLUMNS = (
    Col("processes", "workers"),
    Col("threads each", "threads"),
    Col("batch", "batch"),
    Col("engine", "engine"),
    Col("images/s", "images_per_s", "{:.0f}"),
    Col("ms a batch", "batch_ms"),
    Col("other cores", lambda r: r["noise"]["other_cores"]),
)
PREPROCESS_SEARCH_COLUMNS = (
    Col("preprocess instances", "preprocess_instances"),
    Col("req/s", "throughput", "{:.1f}"),
    Col("p50", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("errors", "errors"),
    Col("decode cores", "decode_cores"),
    Col("best", "best"),
)
REPLICA_COLUMNS = (
    Col("replicas", "replicas"),
    Col("path", "path"),
    Col("c", "concurrency"),
    Col("req/s", "throughput", "{:.1f}"),
    Col("p50", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("errors", "errors"),
    Col("our cores", lambda p: p["noise"].get("our_cores")),
    Col("other cores", lambda p: p["noise"]["other_cores"]),
    Col("vs 1 replica", "vs_one", "{:.2f}"),
)
HEADLINE_BEST_COLUMNS = (
    Col("", "label"),
    Col("images/s", "images_per_s", "{:.0f}"),
    Col("img/req", "batch"),
    Col("p50 ms", "p50_ms"),
    Col("p99 ms", "p99_ms"),
    Col("server batch", "avg_batch"),
)


def _points_table(points: list[dict], where: Sequence[Col]) -> list[str]:
    return _table([*where, *POINT_STATS], points)


def _target_rows(tgts: dict) -> list[dict]:
    return [{"key": k, **t} for k, t in tgts.items()]


def _inprocess_table(rows: list[dict]) -> list[str]:
    batches = sorted({r["batch"] for r in rows})
    keys = sorted({(r["variant"], r["threads"]) for r in rows}, key=lambda k: (k[1], k[0]))
    cells = {
        (r["variant"], r["threads"], r["batch"]): f"{r['median_ms']:.3f} / {r['throughput']:.0f}"
        for r in rows
    }
    columns = [Col("variant", "variant"), Col("threads", "threads")] + [
        Col(f"batch {b}: ms / img/s", lambda k, b=b: cells.get((k["variant"], k["threads"], b)))
        for b in batches
    ]
    return _table(columns, [{"variant": v, "threads": t} for v, t in keys])


def _cross_check_rows(checks: list[dict]) -> list[dict]:
    rows = []
    for x in checks:
        tool = "perf_analyzer" + ("" if x["stable"] else " (unstable)")
        rows.append({**x, "tool": tool})
        ours = {k.removeprefix("ours_"): v for k, v in x.items() if k.startswith("ours_")}
        rows.append({**x, **ours, "tool": "ours"})
    return rows


def knobs_text(k: dict) -> str:
    batching = (
        f"dynamic batching (delay {k['max_queue_delay_us']} us, preferred "
        f"{k['preferred_batch_size']})"
        if k["dynamic_batching"]
        else "no dynamic batching"
    )
    engine = k.get("engine", "onnxruntime")
    streams = f", {k['streams']} stream(s)" if k.get("streams") else ""
    return (
        f"{k['instances']} instance(s) x {k['intra_op_threads']} {engine} thread(s){streams}, "
        f"{batching}, max batch {k['max_batch_size']}"
    )


def _fastapi_shapes(results: dict) -> str:
    shapes = sorted(
        {
            (p.get("workers", 1), p.get("threads"), p.get("engine", "onnxruntime"))
            for p in select(results["points"], config="fastapi")
        }
    )
    if not shapes:
        return "FastAPI baseline not measured"
    listed = " and ".join(f"{w} uvicorn worker(s) x {t} {e} thread(s)" for w, t, e in shapes)
    return f"FastAPI baseline {listed} (the best is compared)"


def _threads_statement(results: dict) -> str:
    cfg = results["config"]
    served = ", ".join(
        f"{name}: {k['instances']} instance(s) x {k['intra_op_threads']} "
        f"{k.get('engine', 'onnxruntime')} thread(s)"
        for name, k in results["variants"].items()
    )
    return (
        f"Threads: in process {cfg['inprocess']['threads']} (each variant on the engine it is "
        f"served with; ORT inter-op 1, sequential); eager torch threads "
        f"{cfg['inprocess']['eager_threads'] or 'default'}; "
        f"Triton as deployed ({served}); {_fastapi_shapes(results)}; client: one Python "
        "process, one asyncio loop (extra client processes would take CPU from the server on 2 "
        "cores); perf_analyzer in its own process."
    )


# -- report sections: each returns its lines, or [] when the run has no data for it ------------


@dataclass(frozen=True)
class Run:
    results: dict
    tgts: dict
    text: str

    @property
    def points(self) -> list[dict]:
        return self.results["points"]

    @property
    def cfg(self) -> dict:
        return self.results["config"]

    @property
    def primary(self) -> str | None:
        return self.results.get("primary")

    @property
    def c(self) -> int:
        return self.cfg["served"]["compare_concurrency"]


def _header(r: Run) -> list[str]:
    w = r.cfg["windows"]
    quick = ", quick" if r.results["quick"] else ""
    return [
        f"# Benchmark: {r.results['model']} ({r.results['timestamp']}{quick})",
        "",
        f"Machine: {r.results['machine']['cpu']}, {r.results['machine']['cores']} cores; "
        f"loopback only. Windows: warm-up {w['warmup_s']} s, then {w['window_s']} s windows "
        f"until {w['windows']} consecutive ones agree within {w['stability']:.0%} (throughput "
        f"and mean latency, perf_analyzer's rule), cap {w['max_s']} s per point; a point whose "
        f"other-process load exceeded {r.cfg['noise']['busy_cores']} cores is redone up to "
        f"{r.cfg['noise']['retries']} times. Latencies in ms, {PERCENTILE_RULE}; "
        "`python -m reliability` (soak, faults) reports the same definition; perf_analyzer takes "
        "the sample at rank round(p x (n - 1)), at most one rank away.",
        "",
        _threads_statement(r.results),
        "",
    ]


def _targets(r: Run) -> list[str]:
    limits = [f"- `{t.key.format(c=r.c)}`: {t.limits}" for t in TARGETS.values() if t.limits]
    return [
        "## Targets",
        "",
        *_table(TARGET_COLUMNS, _target_rows(r.tgts)),
        "What limits each figure on these cores:",
        "",
        *limits,
        "",
    ]


def _verdict(r: Run) -> list[str]:
    return ["## Verdict", "", r.text, ""]


def _models(rows: list[dict]) -> list[dict]:
    """In-process rows of models (ONNX variants, eager), not the raw path's per-image steps."""
    return [r for r in rows if r["kind"] in ("onnx", "eager")]


def _inprocess(r: Run) -> list[str]:
    if not _models(r.results["inprocess"]):
        return []
    return [
        "## In-process baselines (pytest-benchmark, median per call)",
        "",
        *_inprocess_table(_models(r.results["inprocess"])),
        "![in-process](inprocess.png)",
        "",
        *_tensor_processes(r),
    ]


def _tensor_processes(r: Run) -> list[str]:
    rows = r.results.get("tensor_inprocess") or []
    if not rows:
        return []
    return [
        f"`{r.primary}` alone on ready batches in as many processes x threads as its deployed "
        "instances x threads, started together on these cores (`served_vs_inprocess` compares "
        "the better of this and the table's best):",
        "",
        *_table(PIPELINE_COLUMNS, rows),
    ]


def _sweep(r: Run) -> list[str]:
    sweep = select(r.points, section="sweep")
    if not sweep:
        return []
    where = (Col("protocol", "protocol"), Col("img/req", "batch"), Col("c", "concurrency"))
    return [
        f"## Served: closed-loop sweep of `{r.primary}`",
        "",
        *_points_table(sweep, where),
        "![latency vs throughput](latency_throughput.png)",
        "",
        "![server split](server_split.png)",
        "",
    ]


def _openloop(r: Run) -> list[str]:
    openloop = select(r.points, section="openloop", load="open")
    if not openloop:
        return []
    return [
        "## Served: open loop (Poisson arrivals)",
        "",
        "Latency counts from each request's scheduled arrival.",
        "",
        *_points_table(openloop, [Col("rate /s", "rate")]),
        f"Dropped (more than {r.cfg['served']['max_inflight']} in flight): "
        f"{sum(p['dropped'] for p in openloop)}.",
        "",
    ]


def _variants(r: Run) -> list[str]:
    points = select(
        r.points, config="deployed", protocol="http", load="closed", batch=1, path="tensor"
    )
    if not {p["variant"] for p in points} - {r.primary}:
        return []
    return [
        "## Every deployed variant (HTTP)",
        "",
        *_points_table(
            sorted(points, key=lambda p: (p["variant"], p["concurrency"])),
            [Col("variant", "variant"), Col("c", "concurrency")],
        ),
    ]


def _server_label(p: dict) -> str:
    if p["config"] == "fastapi":
        return f"fastapi {p.get('workers', 1)} x {p.get('threads')}"
    return p["config"]


def _side_by_side(r: Run) -> list[str]:
    compare = [
        p
        for p in select(
            r.points, concurrency=r.c, load="closed", variant=r.primary, batch=1, path="tensor"
        )
        if p["config"] in ("deployed", "no_dynamic_batching", "fastapi")
    ]
    latest = {(_server_label(p), p["protocol"]): p for p in compare}  # the last of each
    checks = r.results.get("perf_analyzer") or []
    lines = []
    if latest:
        lines += [
            f"## Side by side at concurrency {r.c} (`{r.primary}`)",
            "",
            "FastAPI `W x T`: W uvicorn workers x T threads each, on the engine Triton serves.",
            "",
            *_points_table(
                list(latest.values()), [Col("server", _server_label), Col("protocol", "protocol")]
            ),
        ]
    if checks:
        lines += [
            "perf_analyzer on the same model and load, beside our numbers from this run "
            "(client cores: the CPU each load generator used, taken from the server's 2 cores):",
            "",
            *_table(CROSS_CHECK_COLUMNS, _cross_check_rows(checks)),
            "Commands:",
            "",
            *(f"- `{x['command']}`" for x in checks),
            "",
        ]
    if lines:
        lines += ["![percentiles](percentiles.png)", ""]
    return lines


def _raw_path(r: Run) -> list[str]:
    e = r.results.get("ensemble")
    points = select(r.points, path="raw", config="deployed", load="closed")
    if not e or not (points or r.results.get("raw_inprocess")):
        return []
    lines = [
        f"## The raw path: encoded images to `{e['name']}`",
        "",
        f"The ensemble `{e['name']}` runs `{e['preprocess']}` ({e['preprocess_instances']} "
        f"instance(s), contract.model_input in Triton's Python backend) then `{e['classifier']}` "
        f"({e['engine']}). Requests cycle through {len(e.get('images', []))} test images of the "
        "run (`results.json` lists them). Per step: queue and compute ms a request, the batch it "
        "ran at, and the CPU cores its processes used (`pre`: the preprocess stubs, i.e. decoding; "
        "`cls`: the classifier's stubs; `triton`: tritonserver's own threads: HTTP/gRPC, the "
        "ensemble scheduler).",
        "",
    ]
    check = r.results.get("raw_check")
    if check:
        verdict = "agree" if check["ok"] else "**DIFFER**"
        lines += [
            f"Answers checked before timing: {check['top1_agree']}/{check['images']} top-1 equal "
            f"to contract.model_input + the model in-process ({check['engine']}), max |logit "
            f"difference| {check['max_abs_logit_diff']:.2e} (tolerance {check['tolerance']}): "
            f"{verdict}.",
            "",
        ]
    if points:
        where = (Col("protocol", "protocol"), Col("img/req", "batch"), Col("c", "concurrency"))
        lines += _table([*where, *RAW_STATS], points)
    rows = r.results["inprocess"]
    kinds = ("decode", "preprocess", "model_input")
    steps = {k: next((x for x in rows if x["kind"] == k), None) for k in kinds}
    if all(steps.values()):
        ms = {k: 1e3 / row["throughput"] for k, row in steps.items()}
        lines += [
            f"In-process, per image over the same test images (one core): bare Pillow decode "
            f"{ms['decode']:.4f} ms, contract.preprocess {ms['preprocess']:.4f} ms, "
            f"contract.model_input (what the server's preprocess model runs) "
            f"{ms['model_input']:.4f} ms.",
            "",
        ]
    if r.results.get("raw_inprocess"):
        lines += [
            "In-process pipeline (contract.model_input on each image, then the model on the "
            "batch), in N processes at once on these cores:",
            "",
            *_table(PIPELINE_COLUMNS, r.results["raw_inprocess"]),
        ]
    checks = r.results.get("perf_analyzer_raw") or []
    if checks:
        lines += [
            "perf_analyzer on the ensemble with the same images (BYTES `--input-data`, "
            "`perf_analyzer_raw_input.json`), beside ours:",
            "",
            *_table(CROSS_CHECK_COLUMNS, _cross_check_rows(checks)),
        ]
    return lines


def _search(r: Run) -> list[str]:
    s = r.results.get("search")
    if not s:
        return []
    rows = [{**c, "best": c == s["best"]} for c in s["candidates"]]
    applied = (
        f"Written to `{s['applied']}`." if s["applied"] else "Not applied (`--apply` writes it)."
    )
    return [
        f"## Serving config search on `{s['model']}` "
        f"(c{', c'.join(map(str, s['concurrency']))}, p99 <= {s['p99_budget_ms']} ms)",
        "",
        s.get("method", ""),
        f"A winner must accept the largest request the clients send ({s['largest_request']} "
        "images; a smaller max batch size refuses it): `accepts largest`.",
        "",
        *_table(SEARCH_COLUMNS, rows),
        f"Deployed config: {knobs_text(s['baseline'])}. {applied}",
        "",
        "![search](search.png)",
        "",
        *_search_preprocess(s.get("preprocess")),
    ]


def _search_preprocess(pre: dict | None) -> list[str]:
    if not pre:
        return []
    rows = [{**c, "best": c == pre["best"]} for c in pre["candidates"]]
    applied = (
        f"Written to `{pre['applied']}`."
        if pre["applied"]
        else "Not applied (`--apply` writes it)."
    )
    return [
        f"Then `{pre['model']}`'s instance count, through the ensemble (raw path, one image a "
        f"request) with the classifier at {knobs_text(pre['classifier'])}; deployed: "
        f"{pre['deployed']} instance(s). {applied}",
        "",
        *_table(PREPROCESS_SEARCH_COLUMNS, rows),
    ]


def _replicas(r: Run) -> list[str]:
    block = replicas_summary(r.results)
    if not block:
        return []
    points = select(r.points, section="replicas")
    rows = [
        {**p, "vs_one": x["vs_one_replica"]} for p, x in zip(points, block["points"], strict=True)
    ]
    spread = "; ".join(
        f"{x['replicas']} replica(s): {x['requests_per_replica']}"
        for x in block["requests_per_replica"] or []
    )
    return [
        f"## Replicas on the same {r.results['machine']['cores']} cores",
        "",
        "N tritonservers over the same repository (`serve.replicas`), each request sent to the "
        "next replica in turn, one image a request over HTTP. On one machine the replicas "
        "share its cores, so this shows the cost of running N servers, not a gain: their "
        "threads, stubs and batchers compete for the same cores, and each replica's batches "
        "are smaller. On N machines each replica has its own cores: predict N x the 1-replica "
        "figure (less what a load balancer and the network add, not measured here), as long "
        "as the clients scale too.",
        "",
        *_table(REPLICA_COLUMNS, rows),
        *(
            [f"Requests each replica's classifier served, over the section: {spread}.", ""]
            if spread
            else []
        ),
    ]


def _analyzer(r: Run) -> list[str]:
    a = r.results.get("analyzer")
    pairs = analyzer_pairs(r.points)
    if not a or not pairs:
        return []
    rows = []
    for ours, theirs in pairs:
        own = next((m for m in a["own"] if m["concurrency"] == ours["concurrency"]), {})
        rows += [
            {**ours, "who": "our search", "knobs": knobs_text(a["ours"]), "theirs": None},
            {**theirs, "who": "Model Analyzer", "knobs": knobs_text(a["winner"]),
             "theirs": own.get("throughput"), "theirs_p99": own.get("p99_ms")},
        ]  # fmt: skip
    columns = (
        Col("c", "concurrency"),
        Col("winner of", "who"),
        Col("config", "knobs"),
        *ALTERNATE_STATS,
        Col("its own run: infer/s", "theirs", "{:.0f}"),
        Col("p99 ms", "theirs_p99"),
    )
    return [
        "## Our config search vs Triton Model Analyzer",
        "",
        f"Model Analyzer's winner ({a['source']}, {a['search']}) and ours ({a['ours_from']}), "
        "each loaded into this run's server and measured by our load generator in this run, one "
        "image a request over HTTP. The last two columns are Model Analyzer's own figures "
        "(perf_analyzer, its run).",
        "",
        *_table(columns, rows),
    ]


def _engines(r: Run) -> list[str]:
    e = r.results.get("engines")
    pairs = engine_pairs(r.points)
    if not e or not pairs:
        return []
    columns = (Col("c", "concurrency"), Col("engine", "engine"), *ALTERNATE_STATS)
    rows = [{**p, "engine": name} for pair in pairs
            for p, name in zip(pair, ("onnxruntime", "openvino"), strict=True)]  # fmt: skip
    return [
        "## The same artifact on each CPU engine",
        "",
        f"{e['model']} ({e['variant']}, deployed on {e['deployed']}) loaded with each engine's "
        "backend, the deployed instances, threads per instance and batching, measured in turn "
        "by our load generator, one image a request over HTTP.",
        "",
        *_table(columns, rows),
    ]


PAIRED_COLUMNS = (
    Col("target", lambda p: f"`{p['key']}`"),
    Col("A", "a"),
    Col("B", "b"),
    Col("figure", "how"),
    Col("each round (first measured)", "rounds"),
    Col("median", "median", "{:.3f}"),
    Col("unpaired", "unpaired", "{:.3f}"),
)


def _paired(r: Run) -> list[str]:
    pairs = r.results.get("paired") or {}
    if not pairs:
        return []
    rows = [
        {**p, "key": key, "unpaired": r.tgts[key]["paired"]["unpaired"],
         "rounds": ", ".join(f"{x['value']:.2f} ({x['first'].upper()})" for x in p["rounds"])}
        for key, p in pairs.items()
        if (r.tgts.get(key) or {}).get("paired")
    ]  # fmt: skip
    return [
        "## Targets measured in paired rounds",
        "",
        "Each target's two sides again, back to back, in alternating order (A then B, then B "
        "then A), at the points the sections above chose; the median round's figure (A / B, "
        "or A - B in ms for an overhead) is the target's value. "
        "Unpaired: the same figure from the sections above, its sides measured minutes apart. "
        "A host that moves the machine's speed moves the unpaired figure and spreads the "
        "rounds; a steady one gives rounds that agree.",
        "",
        *_table(PAIRED_COLUMNS, rows),
    ]


def _noise(r: Run) -> list[str]:
    noise = noise_summary(r.results)
    return [
        "## Noise",
        "",
        f"Other processes' CPU during {noise['measurements']} measurements: mean "
        f"{_fmt(noise['mean_other_cores'])}, max {_fmt(noise['max_other_cores'])} cores "
        f"(threshold {noise['busy_threshold_cores']}); still busy after retries: "
        f"{noise['busy_after_retries']}.",
        "",
        *_host_drift(noise),
    ]


def _host_drift(noise: dict) -> list[str]:
    if noise["host_drift"] is None:
        return []
    line = (
        f"A fixed loop timed on one core before each served point took "
        f"{noise['probe_ms_min']:.1f}-{noise['probe_ms_max']:.1f} ms ({noise['host_drift']:.2f}x)."
    )
    if noise["host_drift"] > HOST_DRIFT:
        line += (
            " **The machine's speed moved during the run** (a VM's host can slow its vCPUs "
            "unseen by the other-process check): ratios between points measured at different "
            "times are not trustworthy (those measured in paired rounds less so: see their "
            "range); re-run on a steadier machine."
        )
    return [line, ""]


def _warnings(r: Run) -> list[str]:
    warnings, errors = r.results["warnings"], r.results["errors"]
    if not (warnings or errors):
        return []
    shown = warnings[:MAX_WARNINGS]
    lines = ["## Warnings and errors", "", *(f"- {w}" for w in shown)]
    if len(warnings) > len(shown):
        lines.append(f"- ... {len(warnings) - len(shown)} more in results.json")
    return [*lines, *(f"- section `{k}` failed: {v}" for k, v in errors.items()), ""]


def _raw(r: Run) -> list[str]:
    return [
        "Raw data: `results.json`, `points.csv`, `inprocess.csv`, `inprocess_*.json` "
        "(pytest-benchmark), `perf_analyzer_*.csv`, `summary.json`.",
        "",
    ]


SECTIONS = (
    _header,
    _targets,
    _verdict,
    _inprocess,
    _sweep,
    _openloop,
    _variants,
    _side_by_side,
    _raw_path,
    _engines,
    _search,
    _analyzer,
    _replicas,
    _paired,
    _noise,
    _warnings,
    _raw,
)


def markdown(results: dict, tgts: dict, text: str) -> str:
    run = Run(results, tgts, text)
    return "\n".join(line for section in SECTIONS for line in section(run))


def _best_per_variant(results: dict) -> list[dict]:
    best: dict[str, dict] = {}
    for p in select(results["points"], config="deployed"):
        name = p["variant"] if p["path"] == "tensor" else f"{results['model']} (raw path)"
        if p["images_per_s"] > best.get(name, {}).get("images_per_s", -1):
            best[name] = p
    rows = []
    eager = next(
        (r for r in results["inprocess"] if r["kind"] == "eager" and r["batch"] == 1), None
    )
    if eager:
        rows.append(
            {"label": "PyTorch eager FP32 (in-process, batch 1)", "batch": 1,
             "images_per_s": eager["throughput"], "p50_ms": eager["median_ms"]}
        )  # fmt: skip
    for name, p in best.items():
        where = f"c{p['concurrency']}" if p["load"] == "closed" else "open loop"
        rows.append({**p, "label": f"Triton {name} ({p['protocol']} {where})"})
    return rows


def headline(results: dict, tgts: dict) -> str:
    """The table the README shows: the targets, then the best served point per variant."""
    lines = [
        f"Benchmark `{results['model']}` ({results['timestamp']}, {results['machine']['cores']} "
        f"CPU cores{', quick run' if results['quick'] else ''}; `make bench`, details in "
        "`bench/results/latest/report.md`):",
        "",
        *_table(HEADLINE_COLUMNS, _target_rows(tgts)),
    ]
    rows = _best_per_variant(results)
    if rows:
        lines += _table(HEADLINE_BEST_COLUMNS, rows)
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    with staged_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_latency_throughput(results: dict, path: Path) -> Path | None:
    points = [p for p in results["points"] if p["config"] == "deployed" and p["load"] == "closed"]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))

    def key(p: dict) -> tuple:
        return p["path"], p["variant"], p["protocol"], p["batch"]

    for series in sorted({key(p) for p in points}):
        kind, variant, protocol, batch = series
        ps = sorted((p for p in points if key(p) == series), key=lambda p: p["concurrency"])
        name = (f"raw {protocol}" if kind == "raw" else f"{variant} {protocol}") + (
            f" x{batch}" if batch > 1 else ""
        )
        x = [p["images_per_s"] for p in ps]
        (line,) = ax.plot(x, [p["p50_ms"] for p in ps], "o-", label=f"{name} p50")
        ax.plot(x, [p["p99_ms"] for p in ps], "x--", color=line.get_color(), label=f"{name} p99")
        for p in ps:
            ax.annotate(
                f"c{p['concurrency']}",
                (p["images_per_s"], p["p50_ms"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    opened = [p for p in results["points"] if p["load"] == "open"]
    if opened:
        ax.plot(
            [p["images_per_s"] for p in opened],
            [p["p99_ms"] for p in opened],
            "s:",
            color="black",
            label="open loop p99",
        )
    ax.set_xlabel("throughput (images/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency vs throughput (closed loop; labels: concurrency; xN: N images a request)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_percentiles(results: dict, path: Path) -> Path | None:
    c = results["config"]["served"]["compare_concurrency"]
    bars = {}
    for p in results["points"]:
        if (
            p["load"] == "closed"
            and p["concurrency"] == c
            and p["batch"] == 1
            and p["path"] == "tensor"
        ):
            label = {"deployed": "", "no_dynamic_batching": " no-dynbatch"}
            if p["config"] == "fastapi":
                label["fastapi"] = f" FastAPI {p.get('workers', 1)}x{p.get('threads')}"
            if p["config"] in label:
                bars[f"{p['variant']} {p['protocol']}{label[p['config']]}"] = p
    for pa in results.get("perf_analyzer") or []:
        if pa["concurrency"] == c and pa["batch"] == 1:
            bars[f"{pa['variant']} {pa['protocol']} perf_analyzer"] = pa
    if not bars:
        return None
    names = list(bars)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4.5))
    width = 0.2
    for i, q in enumerate((50, 90, 95, 99)):
        values = [bars[n].get(f"p{q}_ms") or 0 for n in names]
        ax.bar([j + (i - 1.5) * width for j in range(len(names))], values, width, label=f"p{q}")
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Latency percentiles at concurrency {c}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_inprocess(results: dict, path: Path) -> Path | None:
    rows = _models(results["inprocess"])
    if not rows:
        return None
    keys = sorted({(r["variant"], r["threads"]) for r in rows}, key=lambda k: (k[1], k[0]))
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(keys)), 4.5))
    width = 0.8 / len(batches)
    for i, b in enumerate(batches):
        values = [
            next(
                (
                    r["throughput"]
                    for r in rows
                    if (r["variant"], r["threads"], r["batch"]) == (v, t, b)
                ),
                0,
            )
            for v, t in keys
        ]
        ax.bar(
            [j + (i - (len(batches) - 1) / 2) * width for j in range(len(keys))],
            values,
            width,
            label=f"batch {b}",
        )
    ax.set_xticks(range(len(keys)), [f"{v}\nt{t}" for v, t in keys], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("images/s (median)")
    ax.set_title("In-process throughput")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_server_split(results: dict, path: Path) -> Path | None:
    ps = sorted(
        (
            p
            for p in results["points"]
            if p["section"] == "sweep"
            and p["path"] == "tensor"
            and p["protocol"] == "http"
            and p["batch"] == 1
            and p.get("server_ms") is not None
        ),
        key=lambda p: p["concurrency"],
    )
    if not ps:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = [f"c{p['concurrency']}" for p in ps]
    bottom = [0.0] * len(ps)
    parts = [
        ("queue", "queue_ms"),
        ("compute input", "compute_input_ms"),
        ("compute infer", "compute_infer_ms"),
        ("compute output", "compute_output_ms"),
    ]
    for name, key in parts:
        values = [p[key] or 0 for p in ps]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    rest = [max(p["mean_ms"] - p["server_ms"], 0) for p in ps]
    ax.bar(labels, rest, bottom=bottom, label="client + HTTP + rest", color="lightgray")
    ax.set_ylabel("mean ms per request")
    ax.set_title(f"Where a request's time goes ({results.get('primary')}, HTTP)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_search(results: dict, path: Path) -> Path | None:
    s = results.get("search")
    if not s or not s["candidates"]:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in s["candidates"]:
        ax.scatter(
            r["p99_ms"], r["throughput"], color="tab:green" if r == s["best"] else "tab:blue"
        )
        ax.annotate(
            f"i{r['instances']} b{r.get('max_batch_size')} d{r['max_queue_delay_us']} "
            f"p{r['preferred_batch_size']} t{r['intra_op_threads']}",
            (r["p99_ms"], r["throughput"]),
            fontsize=6,
        )
    ax.axvline(s["p99_budget_ms"], color="red", linestyle="--", label="p99 budget")
    ax.set_xlabel("p99 (ms)")
    ax.set_ylabel("requests/s")
    ax.set_title("Config search candidates (green: best under budget)")
    ax.legend()
    return _save(fig, path)


def write(out: Path, results: dict) -> list[Path]:
    tgts = targets(results)
    text = verdict(results, tgts)
    summary = {
        "model": results["model"],
        "timestamp": results["timestamp"],
        "quick": results["quick"],
        "machine": results["machine"],
        "primary": results.get("primary"),
        **{k: t["value"] for k, t in tgts.items()},
        "targets": tgts,
        "percentiles": PERCENTILE_RULE,
        "fastapi_baseline": fastapi_baseline(results),
        "model_analyzer": results.get("analyzer"),
        "replicas": replicas_summary(results),
        "noise": noise_summary(results),
        "verdict": text,
        "errors": results["errors"],
        "warnings": results["warnings"],
    }
    written = [
        atomic_write_json(out / "summary.json", summary),
        atomic_write_text(out / "report.md", markdown(results, tgts, text)),
        atomic_write_text(out / "headline.md", headline(results, tgts) + "\n"),
        _csv(out / "points.csv", results["points"], POINT_COLUMNS),
        _csv(out / "inprocess.csv", results["inprocess"], INPROCESS_COLUMNS),
    ]
    for name, fn in (
        ("latency_throughput.png", plot_latency_throughput),
        ("percentiles.png", plot_percentiles),
        ("inprocess.png", plot_inprocess),
        ("server_split.png", plot_server_split),
        ("search.png", plot_search),
    ):
        path = fn(results, out / name)
        if path is not None:
            written.append(path)
    return written
