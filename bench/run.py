"""`python -m bench`: every section in one run, results under bench/results/<timestamp>/."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import inprocess, model_analyzer, paired, perf_analyzer, pipeline, replicas, report
from bench.config import (
    SECTIONS,
    BenchConfig,
    ConfigError,
    FastAPIShape,
    InprocessConfig,
    load,
)
from bench.errors import MEASUREMENT_ERRORS, first_line
from bench.fastapi_server import FastAPIServer
from bench.loadgen import Load, TritonTarget, run_point
from bench.rawpath import RawPath
from bench.repository import (
    BenchRepoError,
    Ensemble,
    Variant,
    accepted,
    discover,
    find_ensemble,
    on_engine,
    serving,
    variation,
)
from bench.search import KNOBS, ModelControl, search
from bench.summary import find_point
from contract import ModelSpec
from contract.atomic import atomic_write_json
from contract.config import to_dict
from optimize.config import ENGINES
from serve.errors import ServerError
from serve.server import TritonServer, free_ports

DEFAULT_CONFIG = Path("configs/bench.yaml")
SERVED = ("sweep", "raw", "openloop", "variants", "dynbatch", "perf_analyzer", "engines",
          "search", "analyzer")  # fmt: skip


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see python -m bench --help)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(
        prog="python -m bench",
        description="Benchmark the model repository: in-process baselines, served load tests, "
        "comparisons, config search; writes bench/results/<timestamp>/ and latest/.",
    )
    p.add_argument("--config", type=Path, help=f"YAML config (default: {DEFAULT_CONFIG})")
    p.add_argument("--model", help="model name in the repository (default: the only one)")
    p.add_argument("--repo", help="model repository (default: model_repository)")
    p.add_argument("--run", help="run folder with checkpoint.pt for eager (default runs/<model>)")
    p.add_argument("--out", help="results folder (default: bench/results)")
    p.add_argument("--quick", action="store_true", help="short run (< 3 min), every section")
    p.add_argument("--sections", help=f"comma-separated subset of: {','.join(SECTIONS)}")
    p.add_argument("--p99-ms", type=float, help="config search: p99 budget in ms")
    p.add_argument("--apply", action="store_true", help="write the search winner's config.pbtxt")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchConfig:
    overrides = []
    for key in ("model", "repo", "run", "out"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={getattr(args, key)}")
    if args.sections is not None:
        overrides.append(f"sections=[{args.sections}]")
    if args.p99_ms is not None:
        overrides.append(f"search.p99_ms={args.p99_ms}")
    if args.apply:
        overrides.append("search.apply=true")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UsageError(f"unexpected argument {bad[0]!r}: overrides are key.sub=value")
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    return load(str(path) if path else None, [*overrides, *args.overrides], args.quick)


def _machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


class Bench:
    def __init__(
        self,
        cfg: BenchConfig,
        model: str,
        spec: ModelSpec,
        variants: list[Variant],
        ensemble: Ensemble | None = None,
    ):
        self.cfg, self.model, self.spec, self.variants = cfg, model, spec, variants
        self.ensemble = ensemble
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(cfg.out) / stamp
        for n in range(2, 100):  # two runs in one second each get their own folder
            if not self.out.exists():
                break
            self.out = Path(cfg.out) / f"{stamp}-{n}"
        self.out.mkdir(parents=True)
        self.samples: dict[int, np.ndarray] = {}
        self.results: dict = {
            "model": model,
            "timestamp": stamp,
            "quick": cfg.quick,
            "machine": _machine(),
            "config": to_dict(cfg),
            "variants": {v.name: {"model": v.model, **serving(v.config)} for v in variants},
            "inprocess": [],
            "tensor_inprocess": [],  # the primary in the deployed instances x threads (pipeline)
            "points": [],
            "perf_analyzer": [],
            "search": None,
            # the raw path (bench.rawpath): the ensemble, its answers checked, the in-process
            # pipeline, perf_analyzer on it
            "ensemble": None,
            "raw_check": None,
            "raw_inprocess": [],
            "perf_analyzer_raw": [],
            "errors": {},
            "warnings": [],
        }
        self.raw = RawPath(self, ensemble) if ensemble is not None else None

    def sample(self, batch: int) -> np.ndarray:
        """The request's input: `batch` images of the model's shape (values do not matter)."""
        if batch not in self.samples:
            shape = (batch, self.spec.channels, self.spec.height, self.spec.width)
            self.samples[batch] = pipeline.random_batch(
                self.spec.dtype, shape, self.cfg.served.seed
            )
        return self.samples[batch]

    def log(self, text: str) -> None:
        print(text, flush=True)
        if "warning" in text:
            self.results["warnings"].append(text.strip())

    def section(self, name: str, fn: Callable[[], None]) -> None:
        if name not in self.cfg.sections:
            return
        self.log(f"\n== {name}")
        t0 = time.monotonic()
        try:
            fn()
        except MEASUREMENT_ERRORS as e:
            first = first_line(e)
            self.results["errors"][name] = first
            self.log(f"  {name} failed: {first}")
        self.log(f"  ({time.monotonic() - t0:.0f} s)")

    # -- in-process -------------------------------------------------------------------------
    def _checkpoint(self) -> tuple[Path | None, Path | None]:
        if not self.cfg.inprocess.eager:
            return None, None
        run = Path(self.cfg.run or f"runs/{self.model}")
        checkpoint = run / "checkpoint.pt"
        if not checkpoint.is_file():
            self.log(f"  note: {checkpoint} not found: no PyTorch eager baseline")
            return None, None
        spec_path = run / "model_spec.json"
        return checkpoint, spec_path if spec_path.is_file() else self.variants[0].onnx.parents[1]

    def inprocess_cases(self) -> list[dict]:
        """Every pytest-benchmark case of the run (the paired section runs some again)."""
        checkpoint, spec_path = self._checkpoint()
        onnx = {v.name: (v.onnx, v.engine) for v in self.variants}
        case_list = inprocess.cases(onnx, self.spec, self.inprocess_cfg(), checkpoint, spec_path)
        if self.raw is not None:
            case_list += self.raw.inprocess_cases()
        return case_list

    def run_inprocess(self) -> None:
        case_list = self.inprocess_cases()
        self.log(f"  {len(case_list)} cases under pytest-benchmark")
        rows = inprocess.run(case_list, self.cfg.inprocess, self.cfg.noise, self.out, self.log)
        self.results["inprocess"] = rows
        for r in rows:
            self.log(
                f"  {r['variant']:<12} b{r['batch']:<3} t{r['threads']}: "
                f"{r['median_ms']:8.3f} ms  {r['throughput']:9.0f}/s"
            )
        self.tensor_processes()
        if self.raw is not None:
            self.raw.pipeline()

    def tensor_processes(self) -> None:
        """The primary variant in as many processes x threads as its deployed instances x
        threads, at the batch one process of those threads runs fastest: the in-process
        baseline with the served config's workers (served_vs_inprocess takes the better of this
        and pytest-benchmark's one process)."""
        v = self.primary()
        knobs = serving(v.config)
        workers, threads = knobs["instances"], knobs["intra_op_threads"] or 1
        rows = [
            r
            for r in self.results["inprocess"]
            if r["variant"] == v.name and r["kind"] == "onnx" and r["threads"] == threads
        ]
        if workers < 2 or not rows:
            return  # one process: pytest-benchmark's rows are that baseline
        batch = max(rows, key=lambda r: r["throughput"])["batch"]
        shape = pipeline.tensor_shape(v.onnx, v.engine, batch, workers, threads, self.spec)
        self.results["tensor_inprocess"] = pipeline.measure(
            [shape], [], None, self.cfg.inprocess.processes_s, self.cfg.noise, self.log
        )

    def inprocess_cfg(self) -> InprocessConfig:
        """The in-process settings less the batch sizes the deployed models refuse: the
        baselines run the batches a served request can have, as the sweep sends them."""
        limit = max([1, *(v.config.max_batch_size for v in self.variants)])
        sizes = accepted(self.cfg.inprocess.batch_sizes, limit, self.log)
        return dataclasses.replace(self.cfg.inprocess, batch_sizes=sizes)

    # -- served -----------------------------------------------------------------------------
    def primary(self) -> Variant:
        """The variant the sweep studies: optimize's best CPU variant, else the fastest here."""
        by_name = {v.name: v for v in self.variants}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            run = Path(self.cfg.run or f"runs/{self.model}")
            best = json.loads((run / "optimize_report.json").read_text())["best_cpu_variant"]
            if best["name"] in by_name:
                return by_name[best["name"]]
        rows = [r for r in self.results["inprocess"] if r["kind"] == "onnx"]
        if rows:
            top = max(r["batch"] for r in rows)
            best = max((r for r in rows if r["batch"] == top), key=lambda r: r["throughput"])
            return by_name[best["variant"]]
        return self.variants[0]

    def point(self, make_target, load: Load, batch: int = 1, **tags) -> dict:
        """One measured point; `batch` images per request, throughput in requests/s."""
        p = run_point(
            make_target,
            load,
            self.cfg.windows,
            self.cfg.noise,
            max_inflight=self.cfg.served.max_inflight,
            seed=self.cfg.served.seed,
            log=self.log,
        )
        p.update({"path": "tensor", **tags}, batch=batch, images_per_s=p["throughput"] * batch)
        self.results["points"].append(p)
        split = (
            f", server queue {p['queue_ms']:.2f} + infer {p['compute_infer_ms']:.2f} ms"
            f" (batch {p['avg_batch']})"
            if p.get("queue_ms") is not None
            else ""
        )
        if p.get("preprocess_compute_infer_ms") is not None:  # the raw path, step by step
            split = (
                f", preprocess {p['preprocess_compute_infer_ms']:.2f} + classifier "
                f"{p['classifier_compute_infer_ms']:.2f} ms (batch {p['avg_batch']})"
                + (
                    f", decoding {p['preprocess_cores']:.2f} cores"
                    if p.get("preprocess_cores") is not None
                    else ""
                )
            )
        images = f" x{batch} = {p['images_per_s']:.0f} img/s" if batch > 1 else ""
        self.log(
            f"  {tags['variant']:<12} {p['target']:<12} {load.label():>7}: {p['throughput']:8.1f}/s"
            f"{images}  p50 {p['p50_ms']:.2f}  p99 {p['p99_ms']:.2f} ms  err {p['errors']}"
            f"{'' if p['stable'] else '  (unstable)'}{split}"
        )
        return p

    def triton(self, server: TritonServer, v: Variant, protocol: str = "http", batch: int = 1):
        return lambda: TritonTarget(
            server.http_url, server.grpc_url, protocol, v.model, self.spec, self.sample(batch)
        )

    def closed(self, server, v: Variant, c: int, protocol="http", section="sweep", batch=1):
        known = find_point(
            self.results["points"],
            variant=v.name,
            protocol=protocol,
            concurrency=c,
            config="deployed",
            batch=batch,
            path="tensor",
        )
        if known is not None and section != "sweep":
            return known
        return self.point(
            self.triton(server, v, protocol, batch),
            Load("closed", c),
            batch,
            section=section,
            variant=v.name,
            protocol=protocol,
            config="deployed",
        )

    def run_served(self) -> None:
        wanted = [s for s in SERVED if s in self.cfg.sections]
        if not wanted:
            return
        self.log(f"\n== starting tritonserver ({', '.join(v.model for v in self.variants)})")
        with self.triton_server(self.out / "tritonserver.log") as server:
            primary = self.primary()
            self.results["primary"] = primary.name
            self.log(f"  primary variant: {primary.name} ({primary.model})")
            self.section("sweep", lambda: self.sweep(server, primary))
            if self.raw is not None:
                self.section("raw", lambda: self.raw.sweep(server))
            elif "raw" in self.cfg.sections:
                self.log(
                    f"\n== raw\n  note: no ensemble {self.model} in {self.cfg.repo}: no raw path"
                )
            self.section("openloop", lambda: self.openloop(server, primary))
            self.section("variants", lambda: self.each_variant(server))
            self.section("dynbatch", lambda: self.dynbatch(server, primary))
            self.section("perf_analyzer", lambda: self.cross_check(server, primary))
            self.section("engines", lambda: self.engines(server, primary))
            self.section("search", lambda: self.config_search(server, primary))
            self.section("analyzer", lambda: self.versus_analyzer(server, primary))

    def triton_server(self, log_file: Path) -> TritonServer:
        """A tritonserver (a context manager) for the served models, on free loopback ports."""
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
        return TritonServer(
            self.cfg.repo,
            models=self.served_models(),
            **ports,
            log_file=log_file,
            ready_timeout=self.cfg.served.ready_timeout_s,
        )

    def served_models(self) -> list[str]:
        """Every variant, and the ensemble with its preprocess model where there is one."""
        models = [v.model for v in self.variants]
        if self.ensemble is not None:
            extra = [self.ensemble.preprocess, self.ensemble.classifier, self.ensemble.name]
            models += [m for m in extra if m not in models]
        return models

    def sweep(self, server, v: Variant) -> None:
        for c in self.cfg.served.concurrency:
            self.closed(server, v, c, "http")
        for c in self.cfg.served.grpc_concurrency:
            self.closed(server, v, c, "grpc")
        for batch in accepted(self.cfg.served.client_batches, v.config.max_batch_size, self.log):
            for c in self.cfg.served.batch_concurrency:
                self.closed(server, v, c, "http", batch=batch)

    def openloop(self, server, v: Variant) -> None:
        closed = [
            p
            for p in self.results["points"]
            if p["variant"] == v.name
            and p["load"] == "closed"
            and p["protocol"] == "http"
            and p["batch"] == 1
            and p["path"] == "tensor"
        ]
        if not closed:
            closed = [
                self.closed(server, v, self.cfg.served.compare_concurrency, section="openloop")
            ]
        peak = max(p["throughput"] for p in closed)
        for fraction in self.cfg.served.rates:
            rate = max(fraction * peak, 1.0)
            self.point(
                self.triton(server, v),
                Load("open", rate),
                section="openloop",
                variant=v.name,
                protocol="http",
                config="deployed",
                fraction=fraction,
            )

    def each_variant(self, server) -> None:
        for v in self.variants:
            for c in self.cfg.served.variant_concurrency:
                self.closed(server, v, c, "http", section="variants")

    def dynbatch(self, server, v: Variant) -> None:
        c = self.cfg.served.compare_concurrency
        self.closed(server, v, c, "http", section="dynbatch")
        control = ModelControl(server.http_url, server.admin_headers)
        try:
            control.load(v.model, variation(v.config, dynamic_batching=False))
            self.point(
                self.triton(server, v),
                Load("closed", c),
                section="dynbatch",
                variant=v.name,
                protocol="http",
                config="no_dynamic_batching",
            )
        finally:
            control.load(v.model, v.config)
            control.close()

    def best_point(self, v: Variant) -> dict | None:
        """The deployed closed-loop point of `v` with the most images/s."""
        points = [
            p
            for p in self.results["points"]
            if p["variant"] == v.name
            and p["config"] == "deployed"
            and p["load"] == "closed"
            and p["path"] == "tensor"
        ]
        return max(points, key=lambda p: p["images_per_s"], default=None)

    def cross_check(self, server, v: Variant) -> None:
        """perf_analyzer at the comparison point and at our best point, same load each."""
        c = self.cfg.served.compare_concurrency
        compare = self.closed(server, v, c, "http", section="perf_analyzer")
        best = self.best_point(v)
        checks = []
        for ours in [compare] if best is compare else [compare, best]:
            protocol, batch, c = ours["protocol"], ours["batch"], ours["concurrency"]
            url = server.http_url if protocol == "http" else server.grpc_url
            pa = perf_analyzer.run(
                self.cfg.perf_analyzer, url, protocol, v.model, self.spec, c, batch, self.out
            )
            pa.update(
                variant=v.name,
                best=ours is best,
                **{f"ours_{k}": ours[k] for k in ("images_per_s", "p50_ms", "p99_ms")},
                ours_client_cores=ours["noise"].get("client_cores"),
            )
            checks.append(pa)
            self.log(
                f"  perf_analyzer {protocol} c{c} x{batch}: {pa['images_per_s']:.0f} img/s p50 "
                f"{pa['p50_ms']:.2f} ms, client {pa['client_cores']:.2f} cores; ours "
                f"{ours['images_per_s']:.0f} img/s p50 {ours['p50_ms']:.2f} ms, client "
                f"{pa['ours_client_cores']} cores"
                f"{'' if pa['stable'] else ' (perf_analyzer unstable)'}"
            )
        self.results["perf_analyzer"] = checks
        if self.raw is not None:
            self.raw.cross_check(server)

    def config_search(self, server, v: Variant) -> None:
        s = self.cfg.search
        control = ModelControl(server.http_url, server.admin_headers)

        def measure(c: int) -> dict:
            return self.point(
                self.triton(server, v),
                Load("closed", c),
                section="search",
                variant=v.name,
                protocol="http",
                config="candidate",
            )

        # The largest request the sweep sent: a winner must accept it.
        largest = max([1, *accepted(self.cfg.served.client_batches, v.config.max_batch_size)])
        try:
            outcome = search(
                control, v.model, v.config, s, measure, Path(self.cfg.repo), self.log, largest
            )
        finally:
            control.close()
        self.results["search"] = outcome
        if self.raw is not None:
            self.raw.search_preprocess(server, outcome, v)
        best = outcome["best"]
        if best is None:
            self.log(f"  no candidate met p99 <= {s.p99_ms} ms")
        else:
            self.log(
                f"  best under p99 {s.p99_ms} ms: {report.knobs_text(best['config'])}: "
                f"{best['throughput']:.0f}/s (mean over c{', c'.join(map(str, s.concurrency))})"
            )

    def versus_analyzer(self, server, v: Variant) -> None:
        """Our search's winner and Model Analyzer's, each loaded and measured by our load
        generator at the same concurrencies in this run."""
        found = model_analyzer.latest_winner(Path(self.cfg.analyzer.results), v.model)
        if found is None:
            self.log(f"  note: no Model Analyzer result for {v.model}: run `make model-analyzer`")
            return
        searched = (self.results.get("search") or {}).get("best")
        ours = variation(v.config, **{k: searched[k] for k in KNOBS}) if searched else v.config
        theirs = variation(v.config, **model_analyzer.knobs(found["winner"]))
        self.results["analyzer"] = {
            **found,
            "ours": serving(ours),
            "ours_from": "this run's search" if searched else "the deployed config (no search)",
        }
        pair = [("search_winner", ours), ("analyzer_winner", theirs)]
        self.measure_alternately(server, v, pair, "analyzer", self.cfg.analyzer)

    def engines(self, server, v: Variant) -> None:
        """The primary variant's artifact on each CPU engine, same instances, threads and
        batching: what the engine alone is worth when served (summary.json `engine_gain`)."""
        pair = [(f"engine_{name}", on_engine(v.config, name)) for name in ENGINES]
        self.results["engines"] = {"deployed": v.engine, "variant": v.name, "model": v.model}
        self.measure_alternately(server, v, pair, "engines", self.cfg.engines)

    def measure_alternately(self, server, v: Variant, pair, section: str, cfg) -> None:
        """Each (name, config) of `pair` loaded in turn and measured at cfg.concurrency,
        A B then B A over cfg.rounds, so a load that drifts favours neither; every point is
        tagged `<name>_round`, and the quietest round of each becomes `<name>`."""
        control = ModelControl(server.http_url, server.admin_headers)
        kept: dict[tuple[str, int], dict] = {}
        try:
            for r in range(cfg.rounds):
                for name, config in pair if r % 2 == 0 else pair[::-1]:
                    control.load(v.model, config)
                    self.log(f"  {name}: {report.knobs_text(serving(config))}")
                    for c in cfg.concurrency:
                        p = self.point(
                            self.triton(server, v),
                            Load("closed", c),
                            section=section,
                            variant=v.name,
                            protocol="http",
                            config=f"{name}_round",
                        )
                        if (name, c) not in kept or quieter(p, kept[name, c]):
                            kept[name, c] = p
        finally:
            control.load(v.model, v.config)
            control.close()
        for (name, _), p in kept.items():
            p["config"] = name

    def fastapi_shapes(self, v: Variant) -> list[FastAPIShape]:
        """The configured shapes, else Triton's total threads as N x 1 and 1 x N."""
        if self.cfg.fastapi.shapes:
            return self.cfg.fastapi.shapes
        k = serving(v.config)
        n = k["instances"] * k["intra_op_threads"]
        return [FastAPIShape(n, 1)] + ([FastAPIShape(1, n)] if n > 1 else [])

    def run_fastapi(self) -> None:
        v = next(v for v in self.variants if v.name == self.results.get("primary", v.name))
        c = self.cfg.served.compare_concurrency
        for shape in self.fastapi_shapes(v):
            log = self.out / f"fastapi_{shape.workers}x{shape.threads}.log"
            api = FastAPIServer(v.onnx, shape.threads, log, shape.workers, v.engine)
            with api:
                self.point(
                    lambda api=api: api.target(self.sample(1)),
                    Load("closed", c),
                    section="fastapi",
                    variant=v.name,
                    protocol="http",
                    config="fastapi",
                    workers=shape.workers,
                    threads=shape.threads,
                    engine=v.engine,
                )

    # -- all --------------------------------------------------------------------------------
    def run(self) -> int:
        self.log(f"bench: {self.model} ({', '.join(v.name for v in self.variants)}) -> {self.out}")
        self.section("inprocess", self.run_inprocess)
        try:
            self.run_served()
        except ServerError as e:
            self.results["errors"]["tritonserver"] = str(e).splitlines()[0]
            self.log(f"  tritonserver failed: {str(e).splitlines()[0]}")
        self.section("fastapi", self.run_fastapi)
        self.section("replicas", lambda: replicas.run(self))
        self.section("paired", lambda: paired.run(self))
        atomic_write_json(self.out / "results.json", self.results)
        written = report.write(self.out, self.results)
        latest = link_latest(self.out)
        self.log(f"\nbench: wrote {', '.join(p.name for p in written)} in {self.out}")
        self.log(f"bench: latest -> {latest}")
        if self.results["errors"]:
            self.log(f"bench: sections with errors: {', '.join(self.results['errors'])}")
            return 1
        return 0


def quieter(a: dict, b: dict) -> bool:
    """Whether point `a` was measured with less CPU used by other processes than `b`."""
    return a["noise"]["other_cores"] < b["noise"]["other_cores"]


def link_latest(out: Path) -> Path:
    """`latest` beside the timestamped folders: a relative symlink, or a copy if links fail."""
    latest = out.parent / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.is_dir():
        shutil.rmtree(latest)
    try:
        latest.symlink_to(out.name, target_is_directory=True)
    except OSError:
        shutil.copytree(out, latest)
    return latest


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        cfg = build_config(args)
        model, spec, variants = discover(Path(cfg.repo), cfg.model)
        ensemble = find_ensemble(Path(cfg.repo), model)
    except (UsageError, ConfigError, BenchRepoError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return Bench(cfg, model, spec, variants, ensemble).run()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
