"""A private copy of a deployment (ensemble + its two steps) and a Triton on it, on loopback.

Every check runs on a copy in a scratch folder: faults corrupt files and unload models, which
must never happen to the operator's model_repository.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from contract import ModelSpec, SpecError, load_spec
from reliability.errors import ReliabilityError
from serve.replicas import Replicas, replicas
from serve.repository import (
    RepositoryError,
    add_preprocess_and_ensemble,
    config_text,
    read_config,
)
from serve.server import TritonServer, free_ports
from serve.supervisor import DEFAULT_RESTARTS, RestartPolicy


@dataclass(frozen=True)
class Deployment:
    repo: Path
    spec: ModelSpec
    ensemble: str  # image bytes -> logits
    preprocess: str
    classifier: str  # tensor -> logits

    @property
    def models(self) -> list[str]:
        return [self.preprocess, self.classifier, self.ensemble]

    @property
    def onnx(self) -> Path:
        return self.repo / self.classifier / "1" / "model.onnx"

    @property
    def engine(self) -> str:
        """The CPU backend that serves the classifier (onnxruntime or openvino)."""
        return read_config(self.repo / self.classifier / "config.pbtxt").backend


def find(repo: Path) -> Deployment:
    """The first ensemble of `repo` that preprocesses image bytes and then classifies."""
    for path in sorted(Path(repo).glob("*/config.pbtxt")):
        try:
            config = read_config(path)
        except RepositoryError:
            continue
        steps = [step.model_name for step in config.ensemble_scheduling.step]
        if config.platform != "ensemble" or len(steps) != 2:
            continue
        try:
            spec = load_spec(Path(repo) / steps[0] / "model_spec.json")
        except SpecError:
            continue
        if (Path(repo) / steps[1] / "1" / "model.onnx").is_file():
            return Deployment(Path(repo), spec, config.name, *steps)
    raise ReliabilityError(f"no ensemble of a preprocess model and an ONNX classifier in {repo}")


def copy_from(source: Path, dest: Path) -> Deployment:
    found = find(source)
    for name in found.models:
        shutil.copytree(source / name, dest / name)
    return find(dest)


def build_from_run(run: Path, dest: Path) -> Deployment:
    """Export a train run's checkpoint as `<name>_fp32`, taking the input optimize serves
    (uint8 pixels by default), and add the serve stage's ensemble."""
    from optimize.config import ExportConfig, RepositoryConfig
    from optimize.export import add_probabilities, export_onnx, take_pixels
    from optimize.repository import RepoModel, write_model
    from train.checkpoint import model_from_checkpoint, read_checkpoint

    spec = load_spec(run)
    model = model_from_checkpoint(read_checkpoint(run / "checkpoint.pt"), spec)
    onnx = add_probabilities(export_onnx(model, spec, dest / f".{spec.name}.onnx", 17), spec)
    served = replace(spec, dtype=ExportConfig().served_input)
    if served.dtype == "uint8":
        take_pixels(onnx, served)
    cfg = RepositoryConfig()
    classifier = f"{spec.name}_fp32"
    write_model(dest, RepoModel(classifier, onnx), served, cfg)
    onnx.unlink()
    add_preprocess_and_ensemble(
        dest, served, classifier, cfg.max_batch_size, cfg.preprocess_instances
    )
    return find(dest)


def serve_on(deployment: Deployment, engine: str) -> Deployment:
    """The copy's classifier moved to `engine`'s backend, as optimize would have written it."""
    from optimize.config import RepositoryConfig
    from optimize.repository import set_engine

    path = deployment.repo / deployment.classifier / "config.pbtxt"
    path.write_text(config_text(set_engine(read_config(path), engine, RepositoryConfig())))
    return deployment


def prepare(
    dest: Path, repo: Path | None, run: Path | None, engine: str | None = None
) -> Deployment:
    """Copy the ensemble out of `repo`, else build one from the train run `run`; its classifier
    served on `engine` if given, else on the engine its config names."""
    dest.mkdir(parents=True, exist_ok=True)
    problems = []
    found = None
    if repo is not None:
        try:
            found = copy_from(repo, dest)
        except ReliabilityError as e:
            problems.append(str(e))
    if found is None and run is not None:
        if (run / "checkpoint.pt").is_file():
            found = build_from_run(run, dest)
        else:
            problems.append(f"no checkpoint.pt in {run}")
    if found is None:
        raise ReliabilityError(
            "; ".join(problems) + ": run `make optimize`, or pass --repo / --run"
        )
    return serve_on(found, engine) if engine and engine != found.engine else found


@contextlib.contextmanager
def running(
    repo: Path,
    work: Path,
    models: list[str] | None = None,
    stop_timeout: float = 20.0,
    watchdog: bool = True,
    restarts: RestartPolicy | None = DEFAULT_RESTARTS,
) -> Iterator[TritonServer]:
    triton = server(repo, work, models, watchdog, restarts).start()
    try:
        yield triton
    finally:
        triton.stop(stop_timeout)


def server(
    repo: Path,
    work: Path,
    models: list[str] | None = None,
    watchdog: bool = True,
    restarts: RestartPolicy | None = DEFAULT_RESTARTS,
) -> TritonServer:
    """A TritonServer (not started) on fresh loopback ports, with its own admin key."""
    http, grpc, metrics = free_ports(3)
    return TritonServer(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        models=models,
        admin_key=secrets.token_urlsafe(18),
        backend_dir=work / "backends",
        log_file=work / "server.log",
        watchdog=watchdog,
        restarts=restarts,
    )


@contextlib.contextmanager
def running_replicas(
    repo: Path, work: Path, n: int, stop_timeout: float = 20.0
) -> Iterator[Replicas]:
    """`n` replicas (each with its watchdog and supervisor) on fresh loopback ports."""
    group = replicas(
        repo,
        n,
        log_file=work / "server.log",
        admin_key=secrets.token_urlsafe(18),
        backend_dir=work / "backends",
    ).start()
    try:
        yield group
    finally:
        group.stop(stop_timeout)
