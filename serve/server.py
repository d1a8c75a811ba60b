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
import threading
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
from serve.supervisor import DEFAULT_RESTARTS, RestartPolicy, Supervisor
from serve.watchdog import StubWatchdog

# Model control (load/unload, the repository index; trace and log settings ride along): the
# watchdog needs it, so without an operator key the server makes up one only it knows.
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_HEADER = "admin-key"
# Shared memory maps client memory into the server: its own key, and off without one.
SHM_KEY_ENV = "TRITON_SHM_KEY"
SHM_HEADER = "shm-key"
# Triton matches gRPC metadata under this prefix: `triton-grpc-protocol-admin-key`.
GRPC_PREFIX = "triton-grpc-protocol-"
GRPC_ADMIN_HEADER = f"{GRPC_PREFIX}{ADMIN_HEADER}"
GRPC_SHM_HEADER = f"{GRPC_PREFIX}{SHM_HEADER}"
MODEL_CONTROL_APIS = ("model-repository",)
OPERATOR_APIS = ("trace", "logging")  # with the operator's admin key only
SHM_APIS = ("shared-memory",)
# Triton 2.51 takes restriction keys only on its command line, which every local user can read
# (`ps`), and has no switch to turn one API off. An API nobody needs is therefore guarded by a
# header name no request can carry: HTTP/1.1 ends a header line at the CR (the server drops
# the request), gRPC refuses it as a metadata key. tests/reliability/test_reliability_security.py
# sends it both ways.
DISABLED_HEADER = "disabled\rby-serve"
DISABLED_VALUE = "never"
# Error lines every CPU-only start logs; they would crowd out the real cause.
_GPU_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "CUDA driver version is insufficient")
_KEY_RE = re.compile(r"[A-Za-z0-9._~-]{8,}")  # Triton parses the flag on ',', ':' and '='
STOP_TIMEOUT = 20.0
# What a dying tritonserver leaves in its log: a C++ abort, or an error line.
_CRASH = re.compile(r"terminate called|what\(\):|Aborted|Segmentation fault|^E\d{4} ")


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
_ENSEMBLE_CONFIG = re.compile(r'(^|\s)platform:\s*"ensemble"')


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


def ensembles(repo: Path, models: list[str]) -> list[str]:
    """The ensembles among `models`, read as text: a config too broken to parse still counts."""
    return [
        m
        for m in models
        if _ENSEMBLE_CONFIG.search((Path(repo) / m / "config.pbtxt").read_text(errors="replace"))
    ]


def log_tail(path: Path, lines: int = 12, width: int = 240) -> str:
    """The last lines of a server log; only its error lines if it has any: they name the cause."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "  (no server log)"
    errors = [
        ln
        for ln in text
        if (ln.startswith("E") or "error" in ln.lower() or "terminate called" in ln)
        and not any(n in ln for n in _GPU_NOISE)
    ]
    picked = (errors or text)[-lines:]
    return "\n".join("  " + ln[:width] for ln in picked) or "  (server log is empty)"


def _restriction(apis: tuple[str, ...], header: str, value: str) -> list[str]:
    group = f"{','.join(apis)}:{header}={value}"
    # gRPC prefixes the header itself (GRPC_PREFIX).
    return [f"--http-restricted-api={group}", f"--grpc-restricted-protocol={group}"]


class TritonServer:
    """tritonserver from the nvidia-pytriton wheel, models loaded explicitly, bound to `host`.

    Use as `with TritonServer(repo, http_port=...) as server:` or `.start()` / `.stop()`.
    Ready means every `primary` model answers /v2/models/<name>/ready (default: every ensemble
    among `models`); any other model may fail to load and is then listed in `unavailable`.
    Model control answers only `admin_headers`, shared memory only `shm_headers` (and is off
    without `shm_key`); with `restrict_admin=False` both are open. A stub watchdog and a
    supervisor that restarts a dead tritonserver run beside it unless turned off.
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
        primary: list[str] | None = None,
        admin_key: str | None = None,
        shm_key: str | None = None,
        restrict_admin: bool = True,
        backend_dir: str | Path = BACKEND_DIR,
        log_file: str | Path = STATE_DIR / "server.log",
        ready_timeout: float = 120.0,
        watchdog: bool = True,
        restarts: RestartPolicy | None = DEFAULT_RESTARTS,
        name: str = "",
    ):
        self.repo = Path(repo).absolute()
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.models = list(models) if models else list_models(self.repo)
        # None: the ensembles among `models`, as start() finds them (a restart keeps that list).
        self.primary = list(primary) if primary is not None else None
        self.restrict_admin = restrict_admin
        self.operator_key = admin_key or os.environ.get(ADMIN_KEY_ENV)
        # Without an operator key, model control stays locked behind a key only we know.
        self.admin_key = self.operator_key or secrets.token_urlsafe(24)
        self.shm_key = shm_key or os.environ.get(SHM_KEY_ENV)
        self.backend_dir = Path(backend_dir)
        self.log_file = Path(log_file).absolute()
        self.ready_timeout = ready_timeout
        self.name = name  # "replica 1": prefixes what the watchdog and supervisor print
        self.process: subprocess.Popen | None = None
        self.unavailable: dict[str, str] = {}  # model -> why it failed to load
        self.stopping = threading.Event()  # set by stop(): no restart, no waiting for ready
        # Triton 2.51 never restarts a dead Python stub; the watchdog reloads its model.
        self.watchdog: StubWatchdog | None = StubWatchdog(self) if watchdog else None
        self.supervisor: Supervisor | None = Supervisor(self, restarts) if restarts else None

    @property
    def label(self) -> str:
        return f"{self.name}: " if self.name else ""

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
        """HTTP headers that open model control."""
        return {ADMIN_HEADER: self.admin_key}

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        return {GRPC_ADMIN_HEADER: self.admin_key}

    @property
    def shm_headers(self) -> dict[str, str]:
        """HTTP headers that open shared memory (none opens it without `shm_key`)."""
        return {SHM_HEADER: self.shm_key} if self.shm_key else {}

    def _check(self) -> None:
        if not self.repo.is_dir():
            raise ServerError(f"model repository {self.repo} does not exist")
        if not self.models:
            raise ServerError(f"no models in {self.repo} (no */config.pbtxt)")
        missing = [m for m in self.models if not (self.repo / m / "config.pbtxt").is_file()]
        if missing:
            raise ServerError(f"not in {self.repo}: {', '.join(missing)}")
        not_loaded = [m for m in self.primary or () if m not in self.models]
        if not_loaded:
            raise ServerError(f"primary model {not_loaded[0]} is not among the models to load")
        keys = {ADMIN_KEY_ENV: self.admin_key, SHM_KEY_ENV: self.shm_key}
        for env, key in keys.items() if self.restrict_admin else ():
            if key is not None and not _KEY_RE.fullmatch(key):
                raise ServerError(f"{env} must be 8+ characters of A-Z a-z 0-9 . _ ~ -")
        for name, port in self.ports.items():
            if port_taken(self.host, port):
                raise ServerError(
                    f"port {port} ({name}) on {self.host} is taken: another server is running? "
                    f"choose another with --{name}-port"
                )

    def restrictions(self) -> list[str]:
        """The restricted-API flags: model control, shared memory, operator APIs."""
        if not self.restrict_admin:
            return []
        disabled = (DISABLED_HEADER, DISABLED_VALUE)
        operator = (ADMIN_HEADER, self.operator_key) if self.operator_key else disabled
        shm = (SHM_HEADER, self.shm_key) if self.shm_key else disabled
        return [
            *_restriction(MODEL_CONTROL_APIS, ADMIN_HEADER, self.admin_key),
            *_restriction(SHM_APIS, *shm),
            *_restriction(OPERATOR_APIS, *operator),
        ]

    def command(self, backend_dir: Path) -> list[str]:
        return [
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
            # starts, and wait_ready holds it to its primary models' own ready endpoints.
            "--exit-on-error=false",
            "--strict-readiness=false",
            # Instance priorities take effect: a lone request runs on the warm first instance
            # (serve.repository.instance_groups).
            "--rate-limit=execution_count",
            *self.restrictions(),
        ]

    def start(self) -> TritonServer:
        self._check()
        if self.primary is None:
            self.primary = ensembles(self.repo, self.models)
        self.stopping.clear()
        self._launch()
        if self.watchdog:
            self.watchdog.start()
        if self.supervisor:
            self.supervisor.start()
        return self

    def _launch(self) -> None:
        """Start tritonserver and wait until it is ready; on failure it is stopped again."""
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
            self._terminate(STOP_TIMEOUT)
            raise

    def keep_log(self) -> None:
        """Move the log aside (`<log>.1`): the next start would overwrite what it says."""
        with contextlib.suppress(OSError):
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))

    def relaunch(self) -> None:
        """After tritonserver died: clear what it left, start it again."""
        self._kill_group()  # its stubs outlive it, orphaned
        self._launch()

    def crash_cause(self) -> str:
        """The log's last line about a crash (an abort's `what():`, an error), if any."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        said = [ln for ln in lines if _CRASH.search(ln) and not any(n in ln for n in _GPU_NOISE)]
        return f"its log says: {said[-1].strip()[:200]}" if said else ""

    def wait(self) -> None:
        """Block until the server is down for good; ServerError says why."""
        if self.supervisor:
            self.supervisor.wait()
            return
        code = self.process.wait()
        raise self._fail(f"tritonserver exited with code {code}")

    def _get_ok(self, path: str) -> bool:
        url = f"http://{self.http_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def model_ready(self, model: str) -> bool:
        """Triton's own /v2/models/<model>/ready: what an orchestrator's probe reads."""
        return self._get_ok(f"/v2/models/{model}/ready")

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
        """Block until every model has loaded or failed to load, and every primary model
        answers its own ready endpoint.

        Models that failed land in `self.unavailable`; ServerError (with the log) if the server
        never answered, a primary model is unavailable, or no model loaded at all.
        """
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise self._fail(f"tritonserver exited with code {code} before it was ready")
            if self.stopping.is_set():
                raise ServerError("stopped before it was ready")
            # Triton loads the startup models before it opens its ports: once it answers,
            # every model has loaded or failed (LOADING only on a later reload).
            if self._get_ok("/v2/health/live"):
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
        for model in self.primary or ():
            if not self.model_ready(model):
                why = self.unavailable.get(model, "not ready")
                raise self._fail(f"primary model {model} is unavailable: {why.splitlines()[0]}")
        if not self.ready_models:
            raise self._fail(f"no model loaded ({', '.join(self.models)})")

    def _kill_group(self) -> None:
        # Triton may exit before a busy Python stub does (seen after a drain under load);
        # that stub would live on, orphaned: the rest of the process group goes too.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def _terminate(self, timeout: float) -> None:
        if self.process is not None:
            terminate(self.process, timeout)
            self._kill_group()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL the group after `timeout`."""
        if self.process is None:
            return
        self.stopping.set()  # first: neither a restart nor a reload once we are going
        if self.watchdog:
            self.watchdog.stop()  # a stub that leaves with the server is no crash
        self._terminate(timeout)
        if self.supervisor:
            self.supervisor.join()  # a restart in flight ends: it sees `stopping`
            self._terminate(timeout)  # the process it may have started meanwhile
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
