"""N tritonserver replicas over one repository: the local stand-in for N pods behind one address.

Each replica is a whole TritonServer (its own ports, log, stub watchdog and supervisor); the
client spreads requests over them (client/infer.py --url A,B,...) and leaves out the ones that
do not answer. `python -m serve --replicas N` puts replica i on each of its ports + 3 * i;
`start_replicas` (for tests and bench) takes free ports.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from serve.errors import ServerError
from serve.server import TritonServer, free_ports

PORT_STRIDE = 3  # http, grpc, metrics: replica i listens on each base port + 3 * i
KINDS = ("http", "grpc", "metrics")


def consecutive_ports(http: int, grpc: int, metrics: int, n: int) -> list[dict[str, int]]:
    """The ports of `n` replicas counting up from the first one's; refused if any two meet."""
    ports = [
        {"http": http + PORT_STRIDE * i, "grpc": grpc + PORT_STRIDE * i,
         "metrics": metrics + PORT_STRIDE * i}
        for i in range(n)
    ]  # fmt: skip
    used = [p for replica in ports for p in replica.values()]
    clash = sorted({p for p in used if used.count(p) > 1})
    if clash:
        raise ServerError(
            f"{n} replicas on ports counting up by {PORT_STRIDE} from {http}/{grpc}/{metrics} "
            f"would share port {clash[0]}: give --http-port, --grpc-port, --metrics-port "
            "consecutive values (e.g. 8000, 8001, 8002)"
        )
    if max(used) > 65535:
        raise ServerError(f"{n} replicas need ports up to {max(used)}, above 65535")
    return ports


def replica_log(log_file: Path, index: int, n: int) -> Path:
    """server.log for one server; server-0.log, server-1.log, ... for replicas."""
    log_file = Path(log_file)
    return log_file if n == 1 else log_file.with_name(f"{log_file.stem}-{index}{log_file.suffix}")


class Replicas:
    """TritonServers started and stopped together; `http_url` and `grpc_url` list them all,
    comma-separated, as client.connection.Triton takes them."""

    def __init__(self, servers: list[TritonServer]):
        if not servers:
            raise ServerError("no replicas")
        self.servers = servers

    @property
    def http_urls(self) -> list[str]:
        return [s.http_url for s in self.servers]

    @property
    def grpc_urls(self) -> list[str]:
        return [s.grpc_url for s in self.servers]

    @property
    def http_url(self) -> str:
        return ",".join(self.http_urls)

    @property
    def grpc_url(self) -> str:
        return ",".join(self.grpc_urls)

    @property
    def client_host(self) -> str:
        return self.servers[0].client_host

    def start(self) -> Replicas:
        """Start every replica in turn; if one fails, those already up are stopped."""
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        for server in self.servers:
            server.stop(timeout)

    def wait(self) -> None:
        """Block until every replica is down for good; ServerError names those that gave up."""
        failed = []
        for server in self.servers:
            try:
                server.wait()
            except ServerError as e:
                failed.append(f"{server.name}: {str(e).splitlines()[0]}")
        if failed:
            raise ServerError("; ".join(failed))

    def __enter__(self) -> Replicas:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def replicas(
    repo: str | Path,
    n: int,
    ports: list[dict[str, int]] | None = None,
    *,
    log_file: str | Path,
    **server_options,
) -> Replicas:
    """`n` TritonServers over `repo` (not started) on `ports` (default: free ones), named
    "replica 0", "replica 1", ...; `server_options` go to every TritonServer."""
    if n < 1:
        raise ServerError(f"--replicas must be >= 1, got {n}")
    if ports is None:
        found = free_ports(len(KINDS) * n)
        ports = [dict(zip(KINDS, found[3 * i : 3 * i + 3], strict=True)) for i in range(n)]
    return Replicas(
        [
            TritonServer(
                repo,
                http_port=p["http"],
                grpc_port=p["grpc"],
                metrics_port=p["metrics"],
                log_file=replica_log(log_file, i, n),
                name=f"replica {i}" if n > 1 else "",
                **server_options,
            )
            for i, p in enumerate(ports)
        ]
    )


def start_replicas(repo: str | Path, n: int, *, log_dir: str | Path, **server_options) -> Replicas:
    """Start `n` replicas over `repo` on free loopback ports and return them, ready: their URLs
    are `.http_urls` / `.grpc_urls`. Stop them with `.stop()` (or use `with`). For bench and
    tests; `server_options` go to every TritonServer (models, backend_dir, admin_key, ...)."""
    return replicas(repo, n, log_file=Path(log_dir) / "server.log", **server_options).start()
