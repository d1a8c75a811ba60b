"""`python -m reliability {chaos,soak,faults}`: each starts its own server on 127.0.0.1."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from client.infer import positive
from reliability.errors import ReliabilityError
from serve.errors import ServerError
from serve.local import ENGINES

RESULTS = Path("reliability/results")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo",
        type=Path,
        default=Path("model_repository"),
        help="repository whose ensemble is tested, as a copy (default: %(default)s)",
    )
    p.add_argument(
        "--run",
        type=Path,
        default=Path("runs/default"),
        help="train run used when --repo has no ensemble, and by the optimize faults "
        "(default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (%(default)s)")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="serve the copy's classifier on this CPU backend (default: the one its config "
        "names, i.e. the engine optimize deployed it on)",
    )


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reliability",
        description="Bad inputs, a soak and injected faults against a real Triton on 127.0.0.1. "
        "Each command serves a private copy of the deployment on free ports.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    chaos = sub.add_parser("chaos", help="bad inputs: a table, one row per kind")
    _common(chaos)
    chaos.add_argument("--only", type=_names, help="comma-separated kinds (default: all)")
    chaos.add_argument("--list", action="store_true", help="list the kinds and exit")
    soak = sub.add_parser("soak", help="a bounded load: errors, p99 and server RSS over time")
    _common(soak)
    soak.add_argument("--minutes", type=positive(float), default=10.0)
    soak.add_argument("--concurrency", type=positive(int), default=32)
    faults = sub.add_parser("faults", help="faults under load: a table, one row per fault")
    _common(faults)
    faults.add_argument("--only", type=_names, help="comma-separated faults (default: all)")
    return p


def _faults(args: argparse.Namespace, work: Path) -> int:
    from reliability import faults
    from reliability.deploy import prepare
    from reliability.reference import Reference, probes
    from reliability.report import table, write_json

    known = list(faults.FAULTS)
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        raise ReliabilityError(f"unknown fault {unknown[0]}; known: {', '.join(known)}")
    deployment = prepare(work / "deployment", args.repo, args.run, args.engine)
    run = args.run if (args.run / "checkpoint.pt").is_file() else None
    setup = faults.Setup(work, deployment, probes(deployment, Reference(deployment), 8), run)
    models = ", ".join(deployment.models)
    print(f"faults: {deployment.ensemble} ({models}; {deployment.engine}) under load", flush=True)
    results = faults.run(setup, args.only)
    rows = faults.rows(results)
    write_json(args.out / "faults.json", rows)
    print(table(rows, faults.COLUMNS, width=110))
    print(faults.summary_line(results))
    return 0 if all(r.passed is not False for r in results) else 1


def _chaos(args: argparse.Namespace, work: Path) -> int:
    from reliability import chaos
    from reliability.deploy import prepare, running
    from reliability.kinds import Context, all_kinds
    from reliability.reference import Reference
    from reliability.report import table, write_json

    kinds = all_kinds()
    if args.list:
        print("\n".join(f"{k.name}  ({k.group}, {k.expect})" for k in kinds))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {k.name for k in kinds})
        if unknown:
            raise ReliabilityError(f"unknown kind {unknown[0]!r}: see --list")
        kinds = [k for k in kinds if k.name in args.only]
    deployment = prepare(work / "deployment", args.repo, args.run, args.engine)
    print(
        f"chaos: {len(kinds)} kinds against {deployment.ensemble} ({deployment.engine}), "
        "private server",
        flush=True,
    )
    with running(deployment.repo, work) as triton:
        ctx = Context(triton, deployment, Reference(deployment), work / "cli")
        try:
            rows = chaos.run(ctx, kinds)
        finally:
            ctx.close()
    write_json(args.out / "chaos.json", rows)
    print(table(rows, chaos.COLUMNS, width=100))
    print(chaos.summary_line(rows))
    return 0 if all(r["handled"] for r in rows) else 1


def _soak(args: argparse.Namespace, work: Path) -> int:
    from reliability import soak
    from reliability.deploy import prepare, running
    from reliability.reference import Reference, probes
    from reliability.report import write_json

    deployment = prepare(work / "deployment", args.repo, args.run, args.engine)
    print(
        f"soak: {args.minutes:g} min at concurrency {args.concurrency} on {deployment.ensemble} "
        f"({deployment.engine}) "
        f"and {deployment.classifier}, HTTP and gRPC",
        flush=True,
    )
    checked = probes(deployment, Reference(deployment), 16)
    with running(deployment.repo, work) as triton:
        result = soak.run(triton, checked, args.minutes, args.concurrency, args.out)
    write_json(args.out / "soak.json", result)
    print(soak.report(result))
    return 0 if result["passed"] else 1


COMMANDS = {"chaos": _chaos, "soak": _soak, "faults": _faults}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="reliability-") as work:
            return COMMANDS[args.command](args, Path(work))
    except (ReliabilityError, ServerError) as e:
        print(f"reliability: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
