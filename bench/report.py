"""report.md, headline.md, summary.json, raw CSVs and the plots of one bench run."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.summary import noise_summary, targets, verdict  # noqa: E402
from contract.atomic import atomic_write_json, atomic_write_text, staged_file  # noqa: E402

# fmt: off
POINT_COLUMNS = (
    "section", "variant", "protocol", "config", "load", "concurrency", "rate", "batch",
    "throughput", "images_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
    "requests", "errors", "dropped", "stable",
    "windows", "server_ms", "queue_ms", "compute_input_ms", "compute_infer_ms",
    "compute_output_ms", "avg_batch", "other_cores", "our_cores", "client_cores", "busy",
    "attempts",
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
    return str(value)


def _flat(row: dict) -> dict:
    return {**row, **{k: v for k, v in row.get("noise", {}).items() if k != "seconds"}}


def _csv(path: Path, rows: list[dict], columns) -> Path:
    with staged_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _flat(r).get(k) for k in columns})
    return path


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows),
        "",
    ]


def _target_rows(tgts: dict) -> list[list]:
    mark = {True: "met", False: "**missed**", None: "not measured"}
    return [
        [f"`{k}`", t["value"], t["target"], mark[t["met"]], t["detail"]] for k, t in tgts.items()
    ]


POINT_HEADER = (
    "req/s|img/s|p50|p90|p95|p99 ms|errors|queue|infer ms|server batch|client cores|other cores"
)
POINT_KEYS = (
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "errors",
    "queue_ms",
    "compute_infer_ms",
    "avg_batch",
)


def _points_table(points: list[dict], key_columns: list[tuple[str, str]]) -> list[str]:
    header = [name for name, _ in key_columns] + POINT_HEADER.split("|") + ["stable"]
    rows = [
        [p.get(k) for _, k in key_columns]
        + [f"{p['throughput']:.1f}", f"{p['images_per_s']:.0f}"]
        + [p.get(k) for k in POINT_KEYS]
        + [p["noise"].get("client_cores"), p["noise"]["other_cores"], p["stable"]]
        for p in points
    ]
    return _table(header, rows)


def _cell(rows: list[dict], variant: str, threads: int, batch: int) -> str:
    for r in rows:
        if (r["variant"], r["threads"], r["batch"]) == (variant, threads, batch):
            return f"{r['median_ms']:.3f} / {r['throughput']:.0f}"
    return "-"


def _inprocess_table(rows: list[dict]) -> list[str]:
    batches = sorted({r["batch"] for r in rows})
    keys = sorted({(r["variant"], r["threads"]) for r in rows}, key=lambda k: (k[1], k[0]))
    header = ["variant", "threads"] + [f"batch {b}: ms / img/s" for b in batches]
    body = [[v, t, *(_cell(rows, v, t, b) for b in batches)] for v, t in keys]
    return _table(header, body)


def _cross_check_rows(checks: list[dict]) -> list[list]:
    rows = []
    for x in checks:
        load = [x["protocol"], x["concurrency"], x["batch"]]
        tool = "perf_analyzer" + ("" if x["stable"] else " (unstable)")
        rows.append(
            [*load, tool, f"{x['images_per_s']:.0f}", x["p50_ms"], x["p99_ms"], x["client_cores"]]
        )
        rows.append(
            [*load, "ours", f"{x['ours_images_per_s']:.0f}", x["ours_p50_ms"], x["ours_p99_ms"],
             x["ours_client_cores"]]
        )  # fmt: skip
    return rows


def _knobs(k: dict) -> str:
    batching = (
        f"dynamic batching (delay {k['max_queue_delay_us']} us, preferred "
        f"{k['preferred_batch_size']})"
        if k["dynamic_batching"]
        else "no dynamic batching"
    )
    return (
        f"{k['instances']} instance(s) x {k['intra_op_threads']} ORT thread(s), {batching}, "
        f"max batch {k['max_batch_size']}"
    )


def _threads_statement(results: dict) -> str:
    cfg = results["config"]
    v = results["variants"]
    served = ", ".join(
        f"{name}: {k['instances']} instance(s) x {k['intra_op_threads']} ORT thread(s)"
        for name, k in v.items()
    )
    return (
        f"Threads: in-process ORT intra-op {cfg['inprocess']['threads']} (inter-op 1, "
        f"sequential); eager torch threads {cfg['inprocess']['eager_threads'] or 'default'}; "
        f"Triton as deployed ({served}); "
        f"FastAPI baseline 1 uvicorn worker, {cfg['fastapi']['threads']} ORT thread(s); client: "
        "one Python process, one asyncio loop (extra client processes would take CPU from the "
        "server on 2 cores); perf_analyzer in its own process."
    )


def markdown(results: dict, tgts: dict, text: str) -> str:
    cfg = results["config"]
    w = cfg["windows"]
    points = results["points"]
    primary = results.get("primary")
    c = cfg["served"]["compare_concurrency"]
    quick = ", quick" if results["quick"] else ""
    lines = [
        f"# Benchmark: {results['model']} ({results['timestamp']}{quick})",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; loopback "
        f"only. Windows: warm-up {w['warmup_s']} s, then {w['window_s']} s windows until "
        f"{w['windows']} consecutive ones agree within {w['stability']:.0%} (throughput and mean "
        f"latency, perf_analyzer's rule), cap {w['max_s']} s per point; a point whose "
        f"other-process load exceeded {cfg['noise']['busy_cores']} cores is redone up to "
        f"{cfg['noise']['retries']} times. Latencies in ms, nearest-rank percentiles.",
        "",
        _threads_statement(results),
        "",
        "## Targets",
        "",
        *_table(["key", "value", "target", "", "what"], _target_rows(tgts)),
        "## Verdict",
        "",
        text,
        "",
    ]
    if results["inprocess"]:
        lines += [
            "## In-process baselines (pytest-benchmark, median per call)",
            "",
            *_inprocess_table(results["inprocess"]),
            "![in-process](inprocess.png)",
            "",
        ]
    sweep = [p for p in points if p["section"] == "sweep"]
    if sweep:
        lines += [
            f"## Served: closed-loop sweep of `{primary}`",
            "",
            *_points_table(
                sweep, [("protocol", "protocol"), ("img/req", "batch"), ("c", "concurrency")]
            ),
            "![latency vs throughput](latency_throughput.png)",
            "",
            "![server split](server_split.png)",
            "",
        ]
    openloop = [p for p in points if p["section"] == "openloop" and p["load"] == "open"]
    if openloop:
        lines += [
            "## Served: open loop (Poisson arrivals)",
            "",
            "Latency counts from each request's scheduled arrival.",
            "",
            *_points_table(openloop, [("rate /s", "rate")]),
            f"Dropped (more than {cfg['served']['max_inflight']} in flight): "
            f"{sum(p['dropped'] for p in openloop)}.",
            "",
        ]
    variants = [
        p
        for p in points
        if p["config"] == "deployed"
        and p["protocol"] == "http"
        and p["load"] == "closed"
        and p["batch"] == 1
    ]
    if {p["variant"] for p in variants} - {primary}:
        lines += [
            "## Every deployed variant (HTTP)",
            "",
            *_points_table(
                sorted(variants, key=lambda p: (p["variant"], p["concurrency"])),
                [("variant", "variant"), ("c", "concurrency")],
            ),
        ]
    compare = [
        p
        for p in points
        if p["concurrency"] == c
        and p["load"] == "closed"
        and p["variant"] == primary
        and p["batch"] == 1
        and p["config"] in ("deployed", "no_dynamic_batching", "fastapi")
    ]
    seen, unique = set(), []
    for p in reversed(compare):
        if (p["config"], p["protocol"]) not in seen:
            seen.add((p["config"], p["protocol"]))
            unique.append(p)
    if unique:
        lines += [
            f"## Side by side at concurrency {c} (`{primary}`)",
            "",
            *_points_table(unique[::-1], [("server", "config"), ("protocol", "protocol")]),
        ]
    checks = results.get("perf_analyzer") or []
    if checks:
        lines += [
            "perf_analyzer on the same model and load, beside our numbers from this run "
            "(client cores: the CPU each load generator used, taken from the server's 2 cores):",
            "",
            *_table(
                ["protocol", "c", "img/req", "tool", "img/s", "p50", "p99 ms", "client cores"],
                _cross_check_rows(checks),
            ),
            "Commands:",
            "",
            *(f"- `{x['command']}`" for x in checks),
            "",
        ]
    if unique or checks:
        lines += ["![percentiles](percentiles.png)", ""]
    s = results.get("search")
    if s:
        rows = [
            [
                r["instances"],
                r["max_queue_delay_us"],
                str(r["preferred_batch_size"]),
                r["intra_op_threads"],
                f"{r['throughput']:.1f}",
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
                r is s["best"] or r == s["best"],
            ]
            for r in s["candidates"]
        ]
        lines += [
            f"## Serving config search on `{s['model']}` (c{s['concurrency']}, "
            f"p99 <= {s['p99_budget_ms']} ms)",
            "",
            *_table(
                [
                    "instances",
                    "delay us",
                    "preferred",
                    "ORT threads",
                    "req/s",
                    "p50",
                    "p99 ms",
                    "errors",
                    "best",
                ],
                rows,
            ),
            f"Deployed config: {s['baseline']}. "
            + (
                f"Written to `{s['applied']}`."
                if s["applied"]
                else "Not applied (`--apply` writes the winner)."
            ),
            "",
            "![search](search.png)",
            "",
        ]
    noise = noise_summary(results)
    lines += [
        "## Noise",
        "",
        f"Other processes' CPU during {noise['measurements']} measurements: mean "
        f"{_fmt(noise['mean_other_cores'])}, max {_fmt(noise['max_other_cores'])} cores "
        f"(threshold {noise['busy_threshold_cores']}); still busy after retries: "
        f"{noise['busy_after_retries']}.",
        "",
    ]
    if results["warnings"] or results["errors"]:
        shown = results["warnings"][:MAX_WARNINGS]
        lines += ["## Warnings and errors", "", *(f"- {w}" for w in shown)]
        if len(results["warnings"]) > len(shown):
            lines.append(f"- ... {len(results['warnings']) - len(shown)} more in results.json")
        lines += [f"- section `{k}` failed: {v}" for k, v in results["errors"].items()]
        lines.append("")
    lines += [
        "Raw data: `results.json`, `points.csv`, `inprocess.csv`, `inprocess_*.json` "
        "(pytest-benchmark), `perf_analyzer_*.csv`, `summary.json`.",
        "",
    ]
    return "\n".join(lines)


def headline(results: dict, tgts: dict) -> str:
    """The table the README shows: the targets, then the best served point per variant."""
    lines = [
        f"Benchmark `{results['model']}` ({results['timestamp']}, {results['machine']['cores']} "
        f"CPU cores{', quick run' if results['quick'] else ''}; `make bench`, details in "
        "`bench/results/latest/report.md`):",
        "",
        *_table(
            ["target", "value", "goal", ""],
            [
                [
                    f"`{k}`",
                    t["value"],
                    t["target"],
                    {True: "met", False: "missed", None: "-"}[t["met"]],
                ]
                for k, t in tgts.items()
            ],
        ),
    ]
    best: dict[str, dict] = {}
    for p in results["points"]:
        if p["config"] == "deployed" and p["images_per_s"] > best.get(p["variant"], {}).get(
            "images_per_s", -1
        ):
            best[p["variant"]] = p
    eager = next(
        (r for r in results["inprocess"] if r["kind"] == "eager" and r["batch"] == 1), None
    )
    rows = []
    if eager:
        rows.append(
            [
                "PyTorch eager FP32 (in-process, batch 1)",
                f"{eager['throughput']:.0f}",
                1,
                eager["median_ms"],
                "-",
                "-",
            ]
        )
    for name, p in best.items():
        where = f"c{p['concurrency']}" if p["load"] == "closed" else "open loop"
        rows.append(
            [
                f"Triton {name} ({p['protocol']} {where})",
                f"{p['images_per_s']:.0f}",
                p["batch"],
                p["p50_ms"],
                p["p99_ms"],
                p.get("avg_batch"),
            ]
        )
    if rows:
        lines += _table(["", "images/s", "img/req", "p50 ms", "p99 ms", "server batch"], rows)
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
    series = sorted({(p["variant"], p["protocol"], p["batch"]) for p in points})
    for variant, protocol, batch in series:
        ps = sorted(
            (
                p
                for p in points
                if (p["variant"], p["protocol"], p["batch"]) == (variant, protocol, batch)
            ),
            key=lambda p: p["concurrency"],
        )
        name = f"{variant} {protocol}" + (f" x{batch}" if batch > 1 else "")
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
        if p["load"] == "closed" and p["concurrency"] == c and p["batch"] == 1:
            label = {"deployed": "", "no_dynamic_batching": " no-dynbatch", "fastapi": " FastAPI"}
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
    rows = results["inprocess"]
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
            f"i{r['instances']} d{r['max_queue_delay_us']} p{r['preferred_batch_size']} "
            f"t{r['intra_op_threads']}",
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
