"""The raw path, the one users call: encoded image files from the run's test split sent to the
ensemble `<model>` (`<model>_preprocess` runs contract.model_input, then the deployed
classifier), measured beside the tensor path on the same classifier.

Parts, each called from its section in bench.run: in-process baselines (bare Pillow decode,
contract.preprocess, and the preprocess + model pipeline), the served sweep (answers checked
against in-process first), perf_analyzer on the same images, and the preprocess model's
instance count in the config search.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench import inprocess, perf_analyzer, pipeline
from bench.images import ImagesError, as_batches, test_images, write_perf_analyzer_data
from bench.loadgen import EnsembleTarget, Load
from bench.repository import Ensemble, Variant, accepted, serving, variation, write_config
from bench.search import KNOBS, ModelControl
from bench.summary import find_point, select
from contract import model_input

# Served logits against in-process ones for the same images: the same engine and model file,
# so any difference beyond float noise is a preprocessing or routing fault.
ANSWER_TOLERANCE = 1e-3


class RawPath:
    def __init__(self, bench, ensemble: Ensemble):
        self.bench, self.ensemble = bench, ensemble
        self.cfg = bench.cfg.raw
        self._files: list[Path] | None = None
        by_model = {v.model: v for v in bench.variants}
        # The classifier the ensemble feeds; the tensor path is compared on this one.
        self.variant: Variant | None = by_model.get(ensemble.classifier)
        bench.results["ensemble"] = {
            "name": ensemble.name,
            "preprocess": ensemble.preprocess,
            "preprocess_instances": serving(ensemble.preprocess_config)["instances"],
            "classifier": ensemble.classifier,
            "variant": self.variant.name if self.variant else None,
            "engine": self.variant.engine if self.variant else None,
        }

    @property
    def results(self) -> dict:
        return self.bench.results

    def log(self, text: str) -> None:
        self.bench.log(text)

    def files(self) -> list[Path]:
        if self._files is None:
            run = Path(self.bench.cfg.run or f"runs/{self.bench.model}")
            seed = self.bench.cfg.served.seed
            self._files = test_images(run, self.cfg.data, self.bench.spec, self.cfg.images, seed)
            self.results["ensemble"]["images"] = [str(f) for f in self._files]
            self.log(f"  raw path: {len(self._files)} test images, e.g. {self._files[0]}")
        return self._files

    def spec_path(self) -> Path:
        """The spec the server's preprocess model reads."""
        return Path(self.bench.cfg.repo) / self.ensemble.preprocess / "model_spec.json"

    # -- in-process --------------------------------------------------------------------------
    def inprocess_cases(self) -> list[dict]:
        """Decode and preprocess cases; none (with a warning) without test images, so the
        models' own in-process rows are still measured."""
        try:
            return inprocess.raw_cases(self.files(), self.spec_path())
        except ImagesError as e:
            self.log(f"  warning: no raw-path in-process baselines: {e}")
            return []

    def best_row(self) -> dict | None:
        """The classifier's best in-process row: the batch and threads the pipeline uses."""
        rows = [
            r
            for r in self.results["inprocess"]
            if r["kind"] == "onnx" and self.variant and r["variant"] == self.variant.name
        ]
        return max(rows, key=lambda r: r["throughput"], default=None)

    def pipeline(self) -> None:
        best = self.best_row()
        if self._files is None:  # inprocess_cases found no test images and said so
            return
        if best is None:
            self.log("  note: no in-process row of the ensemble's classifier: no raw pipeline")
            return
        shapes = pipeline.shapes(
            self.variant.onnx, self.variant.engine, best["batch"], best["threads"],
            os.cpu_count() or 1,
        )  # fmt: skip
        self.results["raw_inprocess"] = pipeline.measure(
            shapes, self.files(), self.spec_path(), self.cfg.pipeline_s, self.bench.cfg.noise,
            self.log,
        )  # fmt: skip

    # -- served ------------------------------------------------------------------------------
    def encoded(self) -> list[bytes]:
        return [f.read_bytes() for f in self.files()]

    def target(self, server, protocol: str = "http", batch: int = 1, urls=None):
        http, grpc = urls or (server.http_url, server.grpc_url)
        pid = server.process.pid if urls is None else None
        batches = as_batches(self.encoded(), batch)
        return lambda: EnsembleTarget(http, grpc, protocol, self.ensemble, batches, pid)

    def point(self, server, c: int, protocol="http", batch=1, section="raw", config="deployed"):
        return self.bench.point(
            self.target(server, protocol, batch),
            Load("closed", c),
            batch,
            section=section,
            variant=self.variant.name if self.variant else self.ensemble.classifier,
            protocol=protocol,
            config=config,
            path="raw",
        )

    def check(self, server) -> None:
        """The ensemble's answers for test images against contract.model_input + the deployed
        model in-process, before anything is timed: a fast wrong path is no result."""
        # Imported here: OpenVINO and ONNX Runtime load only when there is a raw path to check.
        import tritonclient.http as httpclient

        from optimize.evaluate import runner

        n = min(self.cfg.check_images, len(self.files()), self.ensemble.max_batch_size)
        if n == 0 or self.variant is None:
            return
        data = self.encoded()[:n]
        spec = self.bench.spec
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            tensor = httpclient.InferInput(self.ensemble.input_name, [n, 1], "BYTES")
            tensor.set_data_from_numpy(np.array(data, dtype=np.object_).reshape(n, 1))
            wanted = httpclient.InferRequestedOutput(spec.output_name)
            served = client.infer(self.ensemble.name, [tensor], outputs=[wanted])
            served = served.as_numpy(spec.output_name).reshape(n, -1)
        finally:
            client.close()
        local = runner(self.variant.onnx, 1, self.variant.engine)
        expected = local(np.stack([model_input(d, spec) for d in data]))
        diff = float(np.abs(served - expected).max())
        agree = int((served.argmax(1) == expected.argmax(1)).sum())
        ok = agree == n and diff <= ANSWER_TOLERANCE
        self.results["raw_check"] = {
            "images": n, "top1_agree": agree, "max_abs_logit_diff": diff,
            "tolerance": ANSWER_TOLERANCE, "ok": ok, "engine": self.variant.engine,
        }  # fmt: skip
        self.log(
            f"  answers: {agree}/{n} top-1 agree with in-process {self.variant.engine}, max "
            f"|logit difference| {diff:.2e}"
            + ("" if ok else "  warning: the raw path answers differ")
        )

    def sweep(self, server) -> None:
        self.check(server)
        for c in self.cfg.concurrency:
            self.point(server, c, "http")
        for c in self.cfg.grpc_concurrency:
            self.point(server, c, "grpc")
        for batch in accepted(self.cfg.client_batches, self.ensemble.max_batch_size, self.log):
            for c in self.cfg.batch_concurrency:
                self.point(server, c, "http", batch)
        if self.variant is not None:  # the tensor path on the same classifier, same load
            self.bench.closed(server, self.variant, self.bench.cfg.served.compare_concurrency,
                              "http", section="raw")  # fmt: skip

    # -- perf_analyzer -------------------------------------------------------------------------
    def cross_check(self, server) -> None:
        """perf_analyzer on the ensemble with the same encoded images (BYTES in --input-data)
        at the comparison point and at our best raw point."""
        points = select(self.results["points"], path="raw", config="deployed", load="closed")
        if not points:
            return
        c = self.bench.cfg.served.compare_concurrency
        compare = find_point(points, protocol="http", concurrency=c, batch=1) or self.point(
            server, c, section="perf_analyzer"
        )
        best = max(points, key=lambda p: p["images_per_s"])
        data = write_perf_analyzer_data(
            self.bench.out / "perf_analyzer_raw_input.json",
            self.ensemble.input_name,
            self.encoded(),
        )
        checks = []
        for ours in [compare] if best is compare else [compare, best]:
            protocol, batch, c = ours["protocol"], ours["batch"], ours["concurrency"]
            url = server.http_url if protocol == "http" else server.grpc_url
            pa = perf_analyzer.run(
                self.bench.cfg.perf_analyzer, url, protocol, self.ensemble.name, self.bench.spec,
                c, batch, self.bench.out, input_data=data,
            )  # fmt: skip
            pa.update(
                variant=ours["variant"],
                best=ours is best,
                **{f"ours_{k}": ours[k] for k in ("images_per_s", "p50_ms", "p99_ms")},
                ours_client_cores=ours["noise"].get("client_cores"),
            )
            checks.append(pa)
            self.log(
                f"  perf_analyzer raw {protocol} c{c} x{batch}: {pa['images_per_s']:.0f} img/s "
                f"p50 {pa['p50_ms']:.2f} ms, client {pa['client_cores']:.2f} cores; ours "
                f"{ours['images_per_s']:.0f} img/s p50 {ours['p50_ms']:.2f} ms"
            )
        self.results["perf_analyzer_raw"] = checks

    # -- config search -------------------------------------------------------------------------
    def search_preprocess(self, server, outcome: dict, searched: Variant) -> None:
        """The preprocess model's instance count, measured through the ensemble at the search
        concurrencies with the classifier at the search's winner (when the search was on the
        ensemble's classifier). The winner is applied with --apply like the classifier's."""
        s = self.bench.cfg.search
        if not s.preprocess_instances:
            return
        base = self.ensemble.preprocess_config
        classifier = None
        if outcome.get("best") and searched.model == self.ensemble.classifier:
            classifier = variation(searched.config, **{k: outcome["best"][k] for k in KNOBS})
        control = ModelControl(server.http_url, server.admin_headers)
        results = []
        try:
            if classifier is not None:
                control.load(searched.model, classifier)
            for n in s.preprocess_instances:
                control.load(self.ensemble.preprocess, variation(base, instances=n))
                points = [self.point(server, c, section="search", config="candidate")
                          for c in s.concurrency]  # fmt: skip
                for p in points:
                    p["preprocess_instances"] = n
                results.append(_candidate(n, points))
                self.log(
                    f"  [preprocess] {n} instance(s): "
                    + ", ".join(
                        f"c{p['concurrency']} {p['throughput']:.0f}/s p99 {p['p99_ms']:.2f} ms"
                        for p in points
                    )
                )
        finally:
            control.load(self.ensemble.preprocess, base)
            if classifier is not None:
                control.load(searched.model, searched.config)
            control.close()
        fitting = [r for r in results if r["errors"] == 0 and r["p99_ms"] <= s.p99_ms]
        best = max(fitting, key=lambda r: r["throughput"], default=None)
        applied = None
        if best is not None and s.apply:
            config = variation(base, instances=best["preprocess_instances"])
            applied = str(write_config(Path(self.bench.cfg.repo), self.ensemble.preprocess, config))
            self.log(
                f"  applied {best['preprocess_instances']} preprocess instance(s) to {applied}"
            )
        outcome["preprocess"] = {
            "model": self.ensemble.preprocess,
            "deployed": serving(base)["instances"],
            "classifier": serving(classifier or searched.config),
            "candidates": results,
            "best": best,
            "applied": applied,
        }


def _candidate(n: int, points: list[dict]) -> dict:
    return {
        "preprocess_instances": n,
        "throughput": sum(p["throughput"] for p in points) / len(points),
        "p50_ms": max(p["p50_ms"] for p in points),
        "p99_ms": max(p["p99_ms"] for p in points),
        "errors": sum(p["errors"] for p in points),
        "decode_cores": max((p.get("preprocess_cores") or 0) for p in points),
        "points": points,
    }
