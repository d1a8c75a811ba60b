"""`python -m serve`: run the model repository on Triton; `python -m serve stop` ends it."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from contract.atomic import atomic_write_text
from serve.errors import ServerError
from serve.install import STATE_DIR
from serve.replicas import PORT_STRIDE, Replicas, consecutive_ports, replicas
from serve.server import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    GRPC_PREFIX,
    MODEL_CONTROL_APIS,
    OPERATOR_APIS,
    SHM_APIS,
    SHM_HEADER,
    SHM_KEY_ENV,
    TritonServer,
    check_pid_file,
    is_loopback,
    server_pid,
    stop_pid_file,
)
from serve.supervisor import RestartPolicy

PID_FILE = STATE_DIR / "server.pid"
LOG_FILE = STATE_DIR / "server.log"
PRIMARY_ENV = "PRIMARY_MODELS"

EPILOG = f"""\
ready: the server counts as ready once every primary model answers /v2/models/<name>/ready:
  the names given with --primary (or ${PRIMARY_ENV}), by default every ensemble among the
  models. Any other model may fail to load: it is reported unavailable, the rest serve.

admin APIs, each with its own key (8+ characters of A-Z a-z 0-9 . _ ~ -):
  {", ".join(MODEL_CONTROL_APIS)} (model control): header `{ADMIN_HEADER}: ${ADMIN_KEY_ENV}`;
    without it the key is random and only this process (its stub watchdog) knows it.
  {", ".join(SHM_APIS)}: header `{SHM_HEADER}: ${SHM_KEY_ENV}`; off without it.
  {", ".join(OPERATOR_APIS)}: header `{ADMIN_HEADER}: ${ADMIN_KEY_ENV}`; off without it.
  gRPC metadata carries the same keys as `{GRPC_PREFIX}<header>`. Triton 2.51 takes them only
  on its command line, where other local users can read them with `ps`: what is not needed
  stays off. --allow-model-control opens them all to anyone who can reach the ports.

restarts: a tritonserver that dies is started again (the pause doubles from 0.5 s), at most
  --max-restarts times within 10 minutes; then serve gives up and exits 1.

replicas: --replicas N starts N servers over the same repository on consecutive ports (the
  local stand-in for N pods); clients spread over them: client/infer.py --url A,B,...

stop a background server:  python -m serve stop [--pid-file {PID_FILE}]
"""


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve",
        description="Serve a Triton model repository with a real tritonserver (CPU).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--models", help="comma-separated model names (default: all in --repo)")
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="tritonserver processes, each with its own watchdog and supervisor; replica i "
        f"listens on each port + {PORT_STRIDE}*i (default: %(default)s)",
    )
    p.add_argument(
        "--primary",
        default=os.environ.get(PRIMARY_ENV),
        help=f"comma-separated models that must be ready (default: ${PRIMARY_ENV}, else every "
        "ensemble)",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=RestartPolicy.max_restarts,
        help="restarts of a dead tritonserver within 10 min (default: %(default)s; 0: none)",
    )
    p.add_argument("--background", action="store_true", help="start, wait until ready, return")
    p.add_argument(
        "--pid-file", type=Path, default=PID_FILE, help="written once ready (default: %(default)s)"
    )
    p.add_argument("--log-file", type=Path, default=LOG_FILE)
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument(
        "--allow-model-control",
        action="store_true",
        help="leave the admin APIs open, without the key",
    )
    return p


def _stop_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve stop", description="Stop a background server."
    )
    p.add_argument("--pid-file", type=Path, default=PID_FILE)
    return p


def _admin(server: TritonServer) -> str:
    if not server.restrict_admin:
        return "all open to anyone who reaches the ports (--allow-model-control)"
    if server.operator_key:
        control = f"model control, trace, logging need header {ADMIN_HEADER}: ${ADMIN_KEY_ENV}"
    else:
        control = f"model control locked (set ${ADMIN_KEY_ENV} to use it), trace and logging off"
    shm = f"need header {SHM_HEADER}: ${SHM_KEY_ENV}" if server.shm_key else "off"
    return f"{control}; shared memory {shm}"


def _announce(group: Replicas, elapsed: float) -> None:
    first = group.servers[0]
    replicas = f", {len(group.servers)} replicas" if len(group.servers) > 1 else ""
    print(f"serve: ready in {elapsed:.1f}s{replicas}, models: {', '.join(first.ready_models)}")
    for server in group.servers:
        for model, reason in server.unavailable.items():
            print(
                f"serve: warning: {server.label}model {model} is unavailable: {reason}",
                file=sys.stderr,
            )
    print(f"  primary  {', '.join(first.primary) or 'none (no ensemble)'}")
    for server in group.servers:
        if server.name:
            print(f"  {server.name}")
        print(f"  HTTP     http://{server.http_url}")
        print(f"  gRPC     {server.grpc_url}")
        print(f"  metrics  {server.metrics_url}")
        print(f"  log      {server.log_file}")
    if len(group.servers) > 1:
        print(f"  client   python client/infer.py --url {group.http_url} IMAGE ...")
    print(f"  admin    {_admin(first)}", flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    if not is_loopback(args.host):
        print(
            f"serve: warning: binding {args.host} exposes inference without TLS or auth "
            "beyond this machine",
            file=sys.stderr,
        )
    check_pid_file(args.pid_file)
    _ports(args)  # bad --replicas or clashing ports: said here, not by a detached child
    if args.background:
        return _detach(args, argv)
    group = _replicas(args)
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.monotonic()
    try:
        group.start()
    except KeyboardInterrupt:
        return 130
    try:
        atomic_write_text(args.pid_file, f"{os.getpid()}\n")
        _announce(group, time.monotonic() - t0)
        print("serve: running until Ctrl-C or `python -m serve stop`", flush=True)
        group.wait()  # returns or raises only once every replica is down for good
    except KeyboardInterrupt:
        print("serve: stopping", flush=True)
        return 0
    finally:
        group.stop()
        if server_pid(args.pid_file) == os.getpid():
            args.pid_file.unlink()
    return 1


def _ports(args: argparse.Namespace) -> list[dict[str, int]]:
    if args.replicas < 1:
        raise ServerError(f"--replicas must be >= 1, got {args.replicas}")
    return consecutive_ports(args.http_port, args.grpc_port, args.metrics_port, args.replicas)


def _replicas(args: argparse.Namespace) -> Replicas:
    return replicas(
        args.repo,
        args.replicas,
        _ports(args),
        log_file=args.log_file,
        host=args.host,
        models=_names(args.models),
        primary=_names(args.primary),
        restrict_admin=not args.allow_model_control,
        ready_timeout=args.ready_timeout,
        restarts=RestartPolicy(max_restarts=args.max_restarts) if args.max_restarts else None,
    )


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _detach(args: argparse.Namespace, argv: list[str]) -> int:
    """Run this same command in the foreground of its own session and return once it is
    ready: that process stays with the server, its stub watchdog too."""
    out_file = args.pid_file.with_suffix(".out")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "serve", *(a for a in argv if a != "--background")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while child.poll() is None and server_pid(args.pid_file) != child.pid:
        time.sleep(0.1)
    said = out_file.read_text(errors="replace")
    if child.returncode is not None:
        print(said, end="", file=sys.stderr)
        return child.returncode or 1
    print(said, end="")
    print(f"  pid      {child.pid} ({args.pid_file}), output in {out_file}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    pid = stop_pid_file(args.pid_file)
    print(f"serve: stopped pid {pid}" if pid else f"serve: no server running ({args.pid_file})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["stop"]:
            return _stop(_stop_parser().parse_args(argv[1:]))
        return _serve(_run_parser().parse_args(argv), argv)
    except ServerError as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 1
