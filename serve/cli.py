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
from serve.server import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    GRPC_ADMIN_HEADER,
    RESTRICTED_APIS,
    TritonServer,
    check_pid_file,
    is_loopback,
    log_tail,
    server_pid,
    stop_pid_file,
)

PID_FILE = STATE_DIR / "server.pid"
LOG_FILE = STATE_DIR / "server.log"

EPILOG = f"""\
admin APIs ({", ".join(RESTRICTED_APIS)}) answer only requests with
the header `{ADMIN_HEADER}: <key>` (gRPC metadata `{GRPC_ADMIN_HEADER}`), the key
taken from ${ADMIN_KEY_ENV} (8+ characters of A-Z a-z 0-9 . _ ~ -). Without ${ADMIN_KEY_ENV}
they stay locked; --allow-model-control opens them to anyone who can reach the ports.
Triton takes the key on its command line, so other local users can read it with `ps`.

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


def _announce(server: TritonServer, elapsed: float) -> None:
    if not server.restrict_admin:
        admin = "open to anyone who reaches the ports (--allow-model-control)"
    elif os.environ.get(ADMIN_KEY_ENV):
        admin = f"need header {ADMIN_HEADER}: ${ADMIN_KEY_ENV}"
    else:
        admin = f"locked (set ${ADMIN_KEY_ENV} to use them)"
    print(f"serve: ready in {elapsed:.1f}s, models: {', '.join(server.ready_models)}")
    for model, reason in server.unavailable.items():
        print(f"serve: warning: model {model} is unavailable: {reason}", file=sys.stderr)
    print(f"  HTTP     http://{server.http_url}")
    print(f"  gRPC     {server.grpc_url}")
    print(f"  metrics  {server.metrics_url}")
    print(f"  admin    APIs {admin}")
    print(f"  log      {server.log_file}", flush=True)


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
    if args.background:
        return _detach(args, argv)
    server = TritonServer(
        args.repo,
        args.host,
        args.http_port,
        args.grpc_port,
        args.metrics_port,
        [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
        restrict_admin=not args.allow_model_control,
        log_file=args.log_file,
        ready_timeout=args.ready_timeout,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.monotonic()
    try:
        server.start()
    except KeyboardInterrupt:
        return 130
    try:
        atomic_write_text(args.pid_file, f"{os.getpid()}\n")
        _announce(server, time.monotonic() - t0)
        print("serve: running until Ctrl-C or `python -m serve stop`", flush=True)
        code = server.process.wait()
    except KeyboardInterrupt:
        print("serve: stopping", flush=True)
        return 0
    finally:
        server.stop()
        if server_pid(args.pid_file) == os.getpid():
            args.pid_file.unlink()
    raise ServerError(
        f"tritonserver exited with code {code}; {server.log_file}:\n{log_tail(server.log_file)}"
    )


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
