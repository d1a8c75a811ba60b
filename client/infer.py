"""Classify images with a model on a running Triton server: the top-k labels of each image.

    python client/infer.py IMAGE_OR_DIR [...] [--url 127.0.0.1:8000] [--send raw|tensor] ...

Imports numpy, Pillow, tqdm, tritonclient and `contract` only (never torch or onnxruntime),
so it runs on a slim client host. `python client/infer.py --help` documents the design.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `client` and `contract` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from client.connection import (  # noqa: E402
    DEFAULT_PORTS,
    SHM_KEY_ENV,
    ClientError,
    ModelInfo,
    Policy,
    Rejected,
    Triton,
    one_line,
)
from client.shm import SharedInputs  # noqa: E402
from contract import ImageError, ModelSpec, SpecError, load_image, load_spec, model_input  # noqa: E402
from contract.spec import DTYPES, PROBABILITIES  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_SKIPPED = 0, 1, 3  # argparse exits 2 on bad flags

EPILOG = f"""\
modes:
  --send raw     encoded image files go as they are (BYTES input `image`) to an ensemble,
                 which preprocesses on the server. Default --model: the server's only
                 ensemble that takes image bytes.
  --send tensor  the client preprocesses with contract.preprocess and calls a classifier
                 directly. Default --model: the classifier that ensemble ends in (optimize
                 points it at the best CPU variant). The recipe (size, color mode, mean,
                 std) is read from --spec, else from <--repo>/<model>/model_spec.json, else
                 from the model_spec.json of the ensemble steps that feed the model; it is
                 checked against the model's input name, type and dims on the server.
  Ready models are listed through the statistics API, which needs no admin key.

top-k: Triton's classification extension (class_count=k) ranks and names the classes when
  the model's output has labels; otherwise the client ranks the scores. Scores are
  probabilities (the models optimize writes output the softmax of their logits beside
  them); --scores logits shows the logits instead. A model without a probabilities output
  is answered in logits, with a note on stderr.

--shared-memory (tensor mode, server on this host): input batches travel through system
  shared memory regions registered with the server, which needs its shared-memory key:
  export {SHM_KEY_ENV}=<the key the server was started with>.

errors: unreachable server, 502/503/504, UNAVAILABLE and timeouts are retried --retries
  times with exponential backoff starting at --backoff seconds; nothing else is retried.

replicas: --url A,B,... spreads requests over them in turn. A replica that fails that way is
  left out at once (the request goes on to the next) and taken back once its health
  endpoints say it and the model are ready (asked every second); the backoff applies only
  when every replica is out. `python -m serve --replicas N` starts N on this host.
  Files that are not images and images the server rejects are reported on stderr and
  skipped; the other images go on. Folders are walked recursively in sorted order,
  skipping hidden files and folders.

exit status: 0 every image classified; 3 some files skipped or rejected (the others were
  printed); 1 fatal error (server unreachable, model missing, ...); 2 bad flags.
"""


@dataclass
class Outcome:
    path: Path
    top: list[tuple[str, float, int]] | None = None  # (label, score, class index), best first
    error: str | None = None


def positive(kind):
    """An argparse type: `kind` values above zero."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def non_negative(kind):
    """An argparse type: `kind` values of zero or more."""

    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python client/infer.py",
        description="Classify images with a model on a running Triton server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    p.add_argument(
        "--url",
        help="server host:port, or replicas' A,B,... (default: 127.0.0.1:8000, gRPC :8001)",
    )
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--model", help="model name (default: see modes below)")
    p.add_argument("--send", choices=("raw", "tensor"), default="raw")
    p.add_argument("--spec", type=Path, help="model_spec.json for --send tensor")
    p.add_argument(
        "--repo",
        type=Path,
        default=Path("model_repository"),
        help="local model repository searched for model_spec.json (default: %(default)s)",
    )
    p.add_argument("--top-k", type=positive(int), default=5)
    p.add_argument(
        "--scores",
        choices=("probabilities", "logits"),
        default="probabilities",
        help="which output ranks and scores the classes (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=positive(int),
        default=8,
        help="images per request, capped at the model's max_batch_size (default: %(default)s)",
    )
    p.add_argument(
        "--concurrency", type=positive(int), default=2, help="requests in flight (default: 2)"
    )
    p.add_argument("--shared-memory", action="store_true", help="inputs via system shared memory")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.add_argument("--timeout", type=positive(float), default=30.0, help="seconds per call")
    p.add_argument(
        "--retries",
        type=non_negative(int),
        default=Policy.retries,
        help=f"after a transient failure (default: {Policy.retries}: "
        f"{Policy().window:g} s of backoff)",
    )
    p.add_argument(
        "--backoff",
        type=non_negative(float),
        default=Policy.backoff,
        help=f"first retry delay, doubled each time (default: {Policy.backoff:g} s)",
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.shared_memory and args.send != "tensor":
        parser.error("--shared-memory needs --send tensor (raw bytes go inline)")
    if args.spec and args.send != "tensor":
        parser.error("--spec applies to --send tensor only")
    if args.url is None:
        args.url = f"127.0.0.1:{DEFAULT_PORTS[args.protocol]}"
    urls = args.url.split(",")
    if any("://" in u or not u.strip() for u in urls):
        parser.error("--url takes host:port (or A,B,... for replicas), without a scheme")
    if args.shared_memory and len(urls) > 1:
        parser.error("--shared-memory needs one server: its regions are registered there")
    return args


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(root) / n for n in names if not n.startswith("."))


def gather(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """The files to classify (folders walked in sorted order), and what was wrong with inputs."""
    files: list[Path] = []
    problems: list[str] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(_walk(path))
            if not found:
                problems.append(f"{path}: no files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def _check_kind(model: ModelInfo, send: str) -> None:
    if send == "raw" and not model.takes_bytes:
        raise ClientError(
            f"model '{model.name}' takes a tensor, not image bytes: use --send tensor"
        )
    if send == "tensor" and not model.takes_tensor:
        hint = ": it takes image bytes, use --send raw" if model.takes_bytes else ""
        raise ClientError(f"model '{model.name}' does not take one FP32 or UINT8 tensor{hint}")
    if model.max_batch_size < 1:
        raise ClientError(f"model '{model.name}' does not batch (max_batch_size 0): unsupported")
    if not model.outputs:
        raise ClientError(f"model '{model.name}' has no outputs")


def default_model(models: list[ModelInfo], send: str) -> str:
    ensembles = [m for m in models if m.platform == "ensemble" and m.takes_bytes]
    if send == "tensor" and not ensembles:
        classifiers = [m for m in models if m.takes_tensor]
        if len(classifiers) == 1:
            return classifiers[0].name
    if len(ensembles) == 1:
        return ensembles[0].name if send == "raw" else ensembles[0].classifier
    names = ", ".join(m.name for m in models) or "none"
    found = "several ensembles" if ensembles else "no ensemble taking image bytes"
    raise ClientError(f"{found} among the ready models ({names}): pass --model")


def pick_model(triton: Triton, args: argparse.Namespace) -> ModelInfo:
    name = args.model or default_model(triton.models(), args.send)
    model = triton.model(name)
    _check_kind(model, args.send)
    return model


def _spec_path(triton: Triton, model: ModelInfo, repo: Path) -> Path:
    feeding = [m for m in triton.models() if m.name != model.name and model.name in m.steps]
    folders = [model.name, *(step for m in feeding for step in m.steps if step != model.name)]
    for folder in folders:
        if (repo / folder / "model_spec.json").is_file():
            return repo / folder / "model_spec.json"
    raise ClientError(
        f"no model_spec.json for '{model.name}' in {repo}/ (looked in {', '.join(folders)}): "
        "pass --spec PATH (e.g. runs/<name>/model_spec.json)"
    )


def load_fitting_spec(triton: Triton, model: ModelInfo, args: argparse.Namespace) -> ModelSpec:
    """The preprocessing recipe for `model`, refused if it does not fit the model's input."""
    path = args.spec or _spec_path(triton, model, args.repo)
    try:
        spec = load_spec(path)
    except SpecError as e:
        raise ClientError(str(e)) from None
    tensor = model.inputs[0]
    want = (spec.channels, spec.height, spec.width)
    fits = len(tensor.dims) == len(want) and all(
        d in (-1, w) for d, w in zip(tensor.dims, want, strict=True)
    )
    if tensor.name != spec.input_name or not fits:
        raise ClientError(
            f"{path} does not fit model '{model.name}': the spec makes '{spec.input_name}' "
            f"{list(want)}, the model takes '{tensor.name}' {list(tensor.dims)}"
        )
    # Pixels or normalised floats, as the model takes them (a run's own spec says float32).
    return replace(spec, dtype=model.tensor_dtype)


def parse_class(entry: bytes) -> tuple[str, float, int]:
    """One classification-extension entry, "score:index:label" (label absent if unlabeled)."""
    parts = entry.decode().split(":", 2)
    return (parts[2] if len(parts) == 3 else parts[1]), float(parts[0]), int(parts[1])


def _reason(e: Exception, path: Path) -> str:
    text = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)
    return text.removeprefix(f"{path}: ")  # contract's messages start with the path already


class Classifier:
    """Turns a batch of paths into outcomes: one request, split up only if the server rejects it."""

    def __init__(
        self,
        triton: Triton,
        model: ModelInfo,
        spec: ModelSpec | None,
        top_k: int,
        shared: SharedInputs | None = None,
        scores: str = "probabilities",
    ):
        self.triton = triton
        self.model = model
        self.spec = spec
        self.top_k = top_k
        self.shared = shared
        self.input = model.inputs[0]
        self.output = score_output(model, scores)

    def _load(self, path: Path) -> bytes | np.ndarray:
        if self.spec is None:
            load_image(path)  # decoded here, so a broken file cannot sink its whole batch
            return path.read_bytes()
        return model_input(path, self.spec)

    def batch(self, paths: list[Path]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        loaded = []
        for i, path in enumerate(paths):
            try:
                loaded.append((i, path, self._load(path)))
            except (ImageError, OSError) as e:
                outcomes[i] = Outcome(path, error=_reason(e, path))
        for (i, _, _), outcome in zip(loaded, self._isolating(loaded), strict=True):
            outcomes[i] = outcome
        return [outcomes[i] for i in range(len(paths))]

    def _isolating(self, items: list) -> list[Outcome]:
        """Outcomes in order; a rejected batch is retried image by image to find the culprit."""
        if not items:
            return []
        try:
            tops = self._infer([data for _, _, data in items])
        except Rejected as e:
            if len(items) == 1:
                return [Outcome(items[0][1], error=f"rejected by the server: {e}")]
            return [outcome for item in items for outcome in self._isolating([item])]
        return [Outcome(path, top) for (_, path, _), top in zip(items, tops, strict=True)]

    def _infer(self, payloads: list) -> list[list[tuple[str, float, int]]]:
        if self.spec is None:
            array = np.array([[p] for p in payloads], dtype=np.object_)
            tensor = self.triton.input(self.input.name, array, "BYTES")
        else:
            array = np.stack(payloads)
            make = self.shared.input if self.shared else self.triton.input
            tensor = make(self.input.name, array, DTYPES[self.spec.dtype])
        class_count = self.top_k if self.output.labeled else 0
        requested = [self.triton.output(self.output.name, class_count)]
        result = self.triton.infer(self.model.name, [tensor], requested)
        rows = result.as_numpy(self.output.name).reshape(len(payloads), -1)
        return [self._top(row) for row in rows]

    def _top(self, row: np.ndarray) -> list[tuple[str, float, int]]:
        if self.output.labeled:
            return [parse_class(entry) for entry in row]
        order = np.argsort(-row, kind="stable")[: self.top_k]
        labels = self.spec.labels if self.spec else ()
        return [(labels[i] if i < len(labels) else str(i), float(row[i]), int(i)) for i in order]


def classify(
    classifier: Classifier, paths: list[Path], batch_size: int, concurrency: int
) -> Iterator[Outcome]:
    """Outcomes in input order, `concurrency` requests in flight."""
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="infer")
    try:
        futures = [pool.submit(classifier.batch, chunk) for chunk in chunks]
        for future in futures:
            yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def as_json(outcome: Outcome) -> str:
    top = [{"label": label, "score": score, "index": i} for label, score, i in outcome.top]
    return json.dumps({"path": str(outcome.path), "top": top})


def table(outcomes: list[Outcome], score: str = "score") -> str:
    rows = [("image", "rank", "label", score)]
    for o in outcomes:
        for rank, (label, score, _) in enumerate(o.top, 1):
            rows.append((str(o.path) if rank == 1 else "", str(rank), label, f"{score:.4f}"))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d:>{widths[3]}}".rstrip()
        for a, b, c, d in rows
    )


def score_output(model: ModelInfo, scores: str):
    """The output that ranks the classes: probabilities where the model has them."""
    outputs = {o.name: o for o in model.outputs}
    if scores == "probabilities" and PROBABILITIES in outputs:
        return outputs[PROBABILITIES]
    return model.outputs[0]


def _top_k(model: ModelInfo, wanted: int) -> int:
    classes = model.outputs[0].dims[-1] if model.outputs[0].dims else -1
    return min(wanted, classes) if classes > 0 else wanted


def classify_all(triton: Triton, args: argparse.Namespace, paths: list[Path]) -> int:
    """Print the results; return how many files failed."""
    triton.check_server()
    model = pick_model(triton, args)
    spec = load_fitting_spec(triton, model, args) if args.send == "tensor" else None
    batch_size = min(args.batch_size, model.max_batch_size)
    shared = None
    if args.shared_memory:
        item = np.dtype(spec.dtype).itemsize
        shared = SharedInputs(triton, batch_size * item * spec.channels * spec.height * spec.width)
    failed, done = 0, []
    quiet = len(paths) <= batch_size or not sys.stderr.isatty()
    classifier = Classifier(triton, model, spec, _top_k(model, args.top_k), shared, args.scores)
    if args.scores == "probabilities" and classifier.output.name != PROBABILITIES:
        print(f"note: model '{model.name}' has no {PROBABILITIES} output: scores are "
              f"'{classifier.output.name}'", file=sys.stderr)  # fmt: skip
    with shared or nullcontext(), tqdm(total=len(paths), unit="img", disable=quiet) as bar:
        for outcome in classify(classifier, paths, batch_size, args.concurrency):
            bar.update(1)
            if outcome.error:
                failed += 1
                bar.write(f"skipped {outcome.path}: {outcome.error}", file=sys.stderr)
            elif args.json:
                bar.write(as_json(outcome), file=sys.stdout)
            else:
                done.append(outcome)
    if done:
        is_probability = classifier.output.name == PROBABILITIES
        print(table(done, "probability" if is_probability else "score"))
    return failed


def run(args: argparse.Namespace) -> int:
    paths, problems = gather(args.inputs)
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not paths:
        raise ClientError("no files to classify")
    triton = Triton(args.url, args.protocol, Policy(args.timeout, args.retries, args.backoff))
    try:
        failed = classify_all(triton, args, paths) + len(problems)
    finally:
        triton.close()
    return EXIT_SKIPPED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
