"""The headline ratios and the two serving overheads measured again in alternating rounds:
each target's two sides back to back, A then B, then B then A, `paired.rounds` times, each
side at the point the earlier sections chose (the served best point, the in-process best
shape, FastAPI's best shape, the served c1 point and the same work's in-process cases).
summary.json's value of each such target is then the median of the rounds' figures (A / B,
or A - B for an overhead in ms), with their range and the unpaired figure beside it.

Why: a VM's host can move its vCPUs' speed by up to 2x from one second to the next, unseen
by the other-process check (docs/bench.md). A ratio of two points measured minutes apart
then measures the host; two sides measured seconds apart, in both orders, mostly do not,
and the median drops a round in which the speed moved between its two halves.

Own servers: tritonserver with the models the pairs need, and the FastAPI baseline in its
best shape, both up through all rounds (each idle while the other side is measured).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench import inprocess, perf_analyzer, pipeline
from bench.errors import MEASUREMENT_ERRORS, first_line
from bench.fastapi_server import FastAPIServer
from bench.images import write_perf_analyzer_data
from bench.loadgen import Load
from bench.repository import variation
from bench.search import ModelControl
from bench.summary import (
    best_of,
    deployed_on,
    facts,
    fastapi_points,
    find_point,
    one_process_best,
    overhead_sides,
    per_image_ms,
    raw_overhead_sides,
    select,
    shape_label,
    where,
)
from serve.server import TritonServer


@dataclass(frozen=True)
class Side:
    label: str  # where it is measured, for the report
    measure: Callable[[], float]  # measured now, in `unit`
    unit: str = "images/s"


@dataclass(frozen=True)
class Pair:
    """A target's two sides, compared as A / B (throughputs), or as A - B where the target is
    a latency over another (ms)."""

    a: Side
    b: Side
    difference: bool = False

    @property
    def how(self) -> str:
        return "A - B" if self.difference else "A / B"

    def figure(self, a: float, b: float) -> float:
        if self.difference:
            return a - b
        return a / b if b > 0 else 0.0


def alternate(pair: Pair, rounds: int, log: Callable[[str], None] = print) -> dict:
    """The pair in `rounds` rounds, A first in even rounds and B first in odd ones."""
    sides, done = {"a": pair.a, "b": pair.b}, []
    for r in range(rounds):
        order = "ab" if r % 2 == 0 else "ba"
        got = {name: sides[name].measure() for name in order}  # measured in that order
        value = pair.figure(got["a"], got["b"])
        done.append({"first": order[0], "a": round(got["a"], 3), "b": round(got["b"], 3),
                     "value": round(value, 3)})  # fmt: skip
        log(f"  round {r + 1}/{rounds}: {got['a']:.2f} vs {got['b']:.2f} {pair.a.unit}: "
            f"{pair.how} = {value:.2f}")  # fmt: skip
    values = [d["value"] for d in done]
    return {
        "a": pair.a.label,
        "b": pair.b.label,
        "how": pair.how,
        "rounds": done,
        "median": round(statistics.median(values), 3),
        "min": min(values),
        "max": max(values),
    }


class Pairs:
    """Each headline ratio's two sides, given the servers, from the earlier sections' results."""

    def __init__(self, bench, server: TritonServer, api: FastAPIServer | None, control):
        self.bench, self.server, self.api, self.control = bench, server, api, control
        # the run's points, its primary variant and the comparison concurrency
        self.facts = facts(bench.results)
        self.out = bench.out / "paired"  # run() made it

    def served(self, like: dict, key: str, latency: bool = False) -> Side:
        """Triton at the point `like` (tensor or raw path) was measured at: its images/s, or
        with `latency` its p50 in ms."""
        b, protocol, c, batch = self.bench, like["protocol"], like["concurrency"], like["batch"]
        tags = dict(section="paired", pair=key, variant=like["variant"], protocol=protocol,
                    config="paired")  # fmt: skip
        if like["path"] == "raw":
            target = b.raw.target(self.server, protocol, batch)
            tags["path"] = "raw"
        else:
            target = b.triton(self.server, self.variant(like["variant"]), protocol, batch)
        value, unit = ("p50_ms", "ms") if latency else ("images_per_s", "images/s")
        return Side(
            f"{like['path']} path served, {where(like)}" + (", p50" if latency else ""),
            lambda: b.point(target, Load("closed", c), batch, **tags)[value],
            unit,
        )

    def reloaded(self, side: Side, model: str, config, note: str) -> Side:
        """`side`, with `model` loaded in `config` (`note` says how) before each measurement."""

        def measure() -> float:
            self.control.load(model, config)
            return side.measure()

        return Side(f"{side.label}, {note}", measure, side.unit)

    def variant(self, name: str):
        return next(v for v in self.bench.variants if v.name == name)

    def inprocess(self, rows: list[dict], seconds: float, raw: bool) -> Side:
        """The best of the in-process rows' shapes, each measured again every time: the
        baseline's best shape is chosen anew in each round, as a drifting host may favour
        another one from one minute to the next."""
        b = self.bench
        files, spec_path = (b.raw.files(), b.raw.spec_path()) if raw else ([], None)
        shapes = [pipeline.shape_of(r) for r in rows]

        def measure() -> float:
            done = pipeline.measure(shapes, files, spec_path, seconds, b.cfg.noise, b.log)
            return max(r["images_per_s"] for r in done)

        return Side("in-process, best of " + " or ".join(shape_label(r) for r in rows), measure)

    def inprocess_ms(self, rows: list[dict]) -> Side:
        """The sum of the rows' ms an image, their pytest-benchmark cases run again now: the
        work a served request does, done in process."""
        b, ids = self.bench, [r["id"] for r in rows]
        cases = [c for c in b.inprocess_cases() if c["id"] in ids]

        def measure() -> float:
            done = inprocess.run(cases, b.cfg.inprocess, b.cfg.noise, self.out, b.log)
            return sum(per_image_ms(r) for r in done)

        return Side("in-process " + " + ".join(ids), measure, "ms")

    def perf_analyzer(self, check: dict, model: str, data=None) -> Side:
        b, protocol = self.bench, check["protocol"]
        url = self.server.http_url if protocol == "http" else self.server.grpc_url
        args = (b.cfg.perf_analyzer, url, protocol, model, b.spec, check["concurrency"],
                check["batch"], self.out)  # fmt: skip
        return Side(
            f"perf_analyzer {protocol} c{check['concurrency']} x{check['batch']}",
            lambda: perf_analyzer.run(*args, input_data=data)["images_per_s"],
        )

    def fastapi(self, c: int) -> Side:
        b, api = self.bench, self.api
        return Side(
            f"FastAPI {len(api.ports)} worker(s) x {api.threads} thread(s), http c{c}",
            lambda: b.point(
                lambda: api.target(b.sample(1)), Load("closed", c), section="paired",
                pair=f"triton_vs_fastapi_c{c}", variant=self.facts.primary,
                protocol="http", config="paired_fastapi",
            )["images_per_s"],
        )  # fmt: skip

    def all(self) -> dict[str, Pair]:
        """key -> its pair, for each target whose two sides the earlier sections measured;
        dynamic batching last, as it reloads the classifier the others are measured on."""
        pairs = (
            self.served_vs_inprocess(),
            self.raw_vs_inprocess(),
            self.overhead("overhead_ms_c1", overhead_sides),
            self.overhead("raw_overhead_ms_c1", raw_overhead_sides),
            self.triton_vs_fastapi(),
            self.vs_perf_analyzer("tensor"),
            self.vs_perf_analyzer("raw"),
            self.dynbatch(),
        )
        return dict(p for p in pairs if p is not None)

    def served_vs_inprocess(self):
        b, primary = self.bench, self.facts.primary
        served = best_of(
            select(self.facts.points, config="deployed", variant=primary, path="tensor")
        )
        bases = inprocess_bases(b, primary)
        if served and bases:
            key, seconds = "served_vs_inprocess", b.cfg.inprocess.processes_s
            return key, Pair(self.served(served, key), self.inprocess(bases, seconds, raw=False))
        return None

    def raw_vs_inprocess(self):
        raw = best_of(select(self.facts.points, path="raw", config="deployed"))
        bases = self.bench.results.get("raw_inprocess") or []
        if raw and bases:
            key, seconds = "raw_vs_inprocess", self.bench.cfg.raw.pipeline_s
            return key, Pair(self.served(raw, key), self.inprocess(bases, seconds, raw=True))
        return None

    def triton_vs_fastapi(self):
        on = deployed_on(self.facts)
        if on and self.api is not None:
            key = f"triton_vs_fastapi_c{self.facts.c}"
            return key, Pair(self.served(on, key), self.fastapi(self.facts.c))
        return None

    def vs_perf_analyzer(self, path: str):
        """Ours and perf_analyzer at the point the cross-check called best."""
        raw = path == "raw"
        checks = self.bench.results.get("perf_analyzer_raw" if raw else "perf_analyzer") or []
        check = next((x for x in checks if x["best"]), None)
        ours = _point_of(self.facts.points, check, path)
        if not (check and ours):
            return None
        key = "vs_perf_analyzer_raw" if raw else "vs_perf_analyzer"
        if raw:
            e = self.bench.ensemble
            data = write_perf_analyzer_data(
                self.out / "perf_analyzer_raw_input.json", e.input_name, self.bench.raw.encoded()
            )
            theirs = self.perf_analyzer(check, e.name, data)
        else:
            theirs = self.perf_analyzer(check, self.variant(check["variant"]).model)
        return key, Pair(self.served(ours, key), theirs)

    def overhead(self, key: str, sides: Callable):
        """A latency over the same work in process (`sides`: summary's pick of the served
        point and the in-process rows), as A - B in ms."""
        c1, rows = sides(self.facts)
        if c1 and rows:
            return key, Pair(self.served(c1, key, latency=True), self.inprocess_ms(rows),
                             difference=True)  # fmt: skip
        return None

    def dynbatch(self):
        f = self.facts
        on = deployed_on(f)
        off = find_point(self.facts.points, config="no_dynamic_batching", variant=f.primary,
                         concurrency=f.c)  # fmt: skip
        if not (on and off):
            return None
        v, key = self.variant(f.primary), f"dynbatch_gain_c{f.c}"
        unbatched = variation(v.config, dynamic_batching=False)
        return key, Pair(
            self.reloaded(self.served(on, key), v.model, v.config, "dynamic batching on"),
            self.reloaded(self.served(off, key), v.model, unbatched, "off"),
        )


def inprocess_bases(bench, variant: str | None) -> list[dict]:
    """The tensor path's in-process baselines as pipeline rows: pytest-benchmark's one process
    at its best batch and threads, and the deployed instances x threads as processes (summary's
    served_vs_inprocess compares the better of the same two)."""
    one = one_process_best(bench.results["inprocess"], variant)
    rows = list(bench.results.get("tensor_inprocess") or [])
    if one is not None:
        v = next(v for v in bench.variants if v.name == variant)
        rows.append(
            pipeline.tensor_shape(v.onnx, v.engine, one["batch"], 1, one["threads"], bench.spec)
        )
    return rows


def _point_of(points: list[dict], check: dict | None, path: str) -> dict | None:
    """Our deployed point that a perf_analyzer cross-check was run at."""
    if check is None:
        return None
    return find_point(points, config="deployed", path=path, protocol=check["protocol"],
                      concurrency=check["concurrency"], batch=check["batch"])  # fmt: skip


def _servers(bench, stack: contextlib.ExitStack) -> tuple[TritonServer, FastAPIServer | None]:
    server = stack.enter_context(bench.triton_server(bench.out / "paired" / "tritonserver.log"))
    c = bench.cfg.served.compare_concurrency
    best = best_of(fastapi_points(bench.results["points"], c), "throughput")
    if best is None:
        return server, None
    v = next(v for v in bench.variants if v.name == best["variant"])
    log = bench.out / "paired" / f"fastapi_{best['workers']}x{best['threads']}.log"
    api = FastAPIServer(v.onnx, best["threads"], log, best["workers"], v.engine)
    return server, stack.enter_context(api)


def run(bench) -> None:
    """Every pair the run has both sides of, in `paired.rounds` alternating rounds."""
    if not select(bench.results["points"], config="deployed"):  # every pair has a served side
        bench.log("  note: no served point in this run (sweep, raw): nothing to pair")
        return
    (bench.out / "paired").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        server, api = _servers(bench, stack)
        control = ModelControl(server.http_url, server.admin_headers)
        stack.callback(control.close)
        pairs = Pairs(bench, server, api, control).all()
        if not pairs:
            bench.log("  note: no ratio has both sides measured in this run: nothing to pair")
        done, errors = measure(pairs, bench.cfg.paired.rounds, bench.log)
    bench.results["paired"] = done
    bench.results["errors"].update(errors)


def measure(pairs: dict[str, Pair], rounds: int, log) -> tuple[dict, dict]:
    """Each pair's rounds, and "paired <key>" -> why for each pair that failed: one pair
    failing (perf_analyzer, say) leaves the others to be measured."""
    done, errors = {}, {}
    for key, pair in pairs.items():
        log(f"  {key}: {pair.how}, A: {pair.a.label}, B: {pair.b.label}")
        try:
            p = done[key] = alternate(pair, rounds, log)
        except MEASUREMENT_ERRORS as e:
            why = first_line(e)
            errors[f"paired {key}"] = why
            log(f"  {key} failed: {why}")
            continue
        log(f"  {key}: median {p['median']:.2f} (range {p['min']:.2f}-{p['max']:.2f})")
    return done, errors
