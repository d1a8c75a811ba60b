"""Start, watch and stop a real tritonserver process on a model repository."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from serve.errors import ServerError
from serve.install import (
    BACKEND_DIR,
    STATE_DIR,
    ensure_backend_dir,
    server_env,
    tritonserver_binary,
)
from serve.procs import alive, children, terminate
from serve.watchdog import StubWatchdog

ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_HEADER = "admin-key"
# Triton matches gRPC metadata under this prefix: `triton-grpc-protocol-admin-key`.
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# Admin APIs: load/unload models, map client memory into the server, write trace/log files.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
# Error lines every CPU-only start logs; they would crowd out the real cause.
_GPU_NOISE = ("CudaDriverHelper", "NVML", "DCGM")
_KEY_RE = re.compile(r"[A-Za-z0-9._~-]{8,}")  # Triton parses the flag on ',', ':' and '='


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another process may still take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (free_port may hand out the same one twice in a row)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def port_taken(host: str, port: int) -> bool:
    # SO_REUSEADDR, as servers set it: a TIME_WAIT leftover is not "taken", a listener is.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise ServerError(f"cannot bind {host}:{port}: {e.strerror}") from None
    return False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TENSORRT_CONFIG = re.compile(r'^\s*(platform:\s*"tensorrt_plan"|backend:\s*"tensorrt")', re.M)


def list_models(repo: Path) -> list[str]:
    """The repository's models this server can load: TensorRT plans need a GPU host."""
    models = []
    for config in sorted(Path(repo).glob("*/config.pbtxt")):
        if _TENSORRT_CONFIG.search(config.read_text(errors="replace")):
            print(
                f"serve: skipping {config.parent.name}: TensorRT plans are served on GPU hosts "
                "(see Dockerfile.triton)"
            )
            continue
        models.append(config.parent.name)
    return models


def log_tail(path: Path, lines: int = 12, width: int = 240) -> str:
    """The last lines of a server log; only its error lines if it has any: they name the cause."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "  (no server log)"
    errors = [
        ln
        for ln in text
        if (ln.startswith("E") or "error" in ln.lower()) and not any(n in ln for n in _GPU_NOISE)
    ]
    picked = (errors or text)[-lines:]
    return "\n".join("  " + ln[:width] for ln in picked) or "  (server log is empty)"


class TritonServer:
    """tritonserver from the nvidia-pytriton wheel, models loaded explicitly, bound to `host`.

    Use as `with TritonServer(repo, http_port=...) as server:` or `.start()` / `.stop()`.
    The admin APIs (RESTRICTED_APIS) answer only requests carrying `admin_headers` (HTTP) or
    `grpc_admin_headers` (gRPC); with `restrict_admin=False` they are open.
    """

    def __init__(
        self,
        repo: str | Path,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        models: list[str] | None = None,
        *,
        admin_key: str | None = None,
        restrict_admin: bool = True,
        backend_dir: str | Path = BACKEND_DIR,
        log_file: str | Path = STATE_DIR / "server.log",
        ready_timeout: float = 120.0,
        watchdog: bool = True,
    ):
        self.repo = Path(repo).absolute()
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.models = list(models) if models else list_models(self.repo)
        self.restrict_admin = restrict_admin
        # Without an operator key the admin APIs stay locked behind a key nobody knows.
        self.admin_key = admin_key or os.environ.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(24)
        self.backend_dir = Path(backend_dir)
        self.log_file = Path(log_file).absolute()
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self.unavailable: dict[str, str] = {}  # model -> why it failed to load
        # Triton 2.51 never restarts a dead Python stub; the watchdog reloads its model.
        self.watchdog: StubWatchdog | None = StubWatchdog(self) if watchdog else None

    @property
    def ready_models(self) -> list[str]:
        return [m for m in self.models if m not in self.unavailable]

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def http_url(self) -> str:
        """host:port as tritonclient.http wants it."""
        return f"{self.client_host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.client_host}:{self.ports['metrics']}/metrics"

    @property
    def admin_headers(self) -> dict[str, str]:
        """HTTP headers that open the admin APIs."""
        return {ADMIN_HEADER: self.admin_key}

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        return {GRPC_ADMIN_HEADER: self.admin_key}

    def _check(self) -> None:
        if not self.repo.is_dir():
            raise ServerError(f"model repository {self.repo} does not exist")
        if not self.models:
            raise ServerError(f"no models in {self.repo} (no */config.pbtxt)")
        missing = [m for m in self.models if not (self.repo / m / "config.pbtxt").is_file()]
        if missing:
            raise ServerError(f"not in {self.repo}: {', '.join(missing)}")
        if self.restrict_admin and not _KEY_RE.fullmatch(self.admin_key):
            raise ServerError(f"{ADMIN_KEY_ENV} must be 8+ characters of A-Z a-z 0-9 . _ ~ -")
        for name, port in self.ports.items():
            if port_taken(self.host, port):
                raise ServerError(
                    f"port {port} ({name}) on {self.host} is taken: another server is running? "
                    f"choose another with --{name}-port"
                )

    def command(self, backend_dir: Path) -> list[str]:
        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={self.repo}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            # Configs are complete; auto-complete would start one extra stub per Python model.
            "--disable-auto-complete-config",
            f"--http-address={self.host}",
            f"--http-port={self.ports['http']}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
            # One model that fails to load must not take the others down with it: the server
            # starts, is ready, and reports that model unavailable (see wait_ready).
            "--exit-on-error=false",
            "--strict-readiness=false",
        ]
        if self.restrict_admin:
            group = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}"
            cmd += [f"--http-restricted-api={group}", f"--grpc-restricted-protocol={group}"]
        return cmd

    def start(self) -> TritonServer:
        self._check()
        backend_dir = ensure_backend_dir(self.backend_dir)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the server in order.
            self.process = subprocess.Popen(
                self.command(backend_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
                start_new_session=True,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        if self.watchdog:
            self.watchdog.start()
        return self

    def _get_ok(self, path: str) -> bool:
        url = f"http://{self.http_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def model_states(self) -> dict[str, tuple[str, str]]:
        """{model: (state, reason)} from the repository index (an admin API)."""
        request = urllib.request.Request(
            f"http://{self.http_url}/v2/repository/index",
            data=b"{}",
            headers=self.admin_headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            index = json.load(r)
        return {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in index}

    def _fail(self, why: str) -> ServerError:
        return ServerError(f"{why}; {self.log_file}:\n{log_tail(self.log_file)}")

    def _logged_error(self, model: str) -> str:
        """The server log's last error line about `model`: a config Triton could not parse
        never reaches the repository index."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [ln for ln in lines if ln.startswith("E") and f"'{model}'" in ln]
        return errors[-1].split('] "', 1)[-1].rstrip('"') if errors else "not loaded"

    def wait_ready(self) -> None:
        """Block until the server is ready and every model has loaded or failed to load.

        Models that failed land in `self.unavailable`; ServerError (with the log) if the server
        never got ready or no model loaded at all.
        """
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise self._fail(f"tritonserver exited with code {code} before it was ready")
            # Triton loads the startup models before it opens its ports: once it answers
            # ready, every model has loaded or failed (LOADING only on a later reload).
            if self._get_ok("/v2/health/ready"):
                states = self.model_states()
                if not any(states.get(m, ("",))[0] == "LOADING" for m in self.models):
                    break
            if time.monotonic() > deadline:
                raise self._fail(f"tritonserver not ready after {self.ready_timeout:.0f}s")
            time.sleep(0.1)
        self.unavailable = {
            m: states.get(m, ("", ""))[1] or self._logged_error(m)
            for m in self.models
            if states.get(m, ("",))[0] != "READY"
        }
        if not self.ready_models:
            raise self._fail(f"no model loaded ({', '.join(self.models)})")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL the group after `timeout`."""
        if self.process is None:
            return
        if self.watchdog:
            self.watchdog.stop()  # first: a stub that leaves with the server is no crash
        terminate(self.process, timeout)
        # Triton may exit before a busy Python stub does (seen after a drain under load);
        # that stub would live on, orphaned: the rest of the process group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def server_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is still `python -m serve` (pids get reused)."""
    try:
        pid = int(Path(pid_file).read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if argv[1:3] == [b"-m", b"serve"] else None


def check_pid_file(pid_file: Path) -> None:
    running = server_pid(pid_file)
    if running is not None:
        raise ServerError(
            f"a server is already running (pid {running}, {pid_file}): "
            "stop it with `python -m serve stop`"
        )


def stop_pid_file(pid_file: Path, timeout: float = 40.0) -> int | None:
    """Stop the server named by `pid_file`; return its pid, or None if none ran."""
    pid = server_pid(pid_file)
    if pid is not None:
        tritonservers = children(pid)  # in their own session: killed apart if it comes to that
        os.kill(pid, signal.SIGTERM)  # it stops its tritonserver, then exits
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for group in (pid, *tritonservers) if alive(pid) else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    Path(pid_file).unlink(missing_ok=True)
    return pid
