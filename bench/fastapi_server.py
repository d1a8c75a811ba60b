"""Start and stop the FastAPI baseline (bench.fastapi_app) in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from bench.loadgen import RawHTTPTarget
from serve.install import with_malloc_env
from serve.procs import terminate
from serve.server import free_ports


class FastAPIServerError(RuntimeError):
    pass


class FastAPIServer:
    """The baseline on 127.0.0.1, one uvicorn process a worker, each on its own port; a
    context manager that always stops them.

    Not uvicorn's `--workers`: its workers share one listening socket, and a burst of new
    connections (a closed-loop client opening its pool) all went to the worker that woke
    first (16 of 16, four times in four), so "2 workers" served on one. One port a worker and
    a client that opens its connections on them in turn (`ports`) split the load evenly, as
    Triton's scheduler does over its instances.
    """

    def __init__(
        self,
        model: Path,
        threads: int,
        log_file: Path,
        workers: int = 1,
        engine: str = "onnxruntime",
    ):
        self.model, self.threads, self.log_file, self.engine = model, threads, log_file, engine
        self.ports = free_ports(workers)  # one a worker
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The first worker's address (with `ports`, the load generator reaches them all)."""
        return f"http://127.0.0.1:{self.ports[0]}"

    def target(self, sample: np.ndarray) -> RawHTTPTarget:
        """The load generator's target: `sample` posted to every worker's port in turn."""
        return RawHTTPTarget(f"{self.url}/infer", sample, self.ports)

    def _start(self, port: int, log) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "bench.fastapi_app", "--model", str(self.model),
               "--port", str(port), "--threads", str(self.threads),
               "--engine", self.engine]  # fmt: skip
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=with_malloc_env(dict(os.environ)),  # as Triton's: a fair baseline
            start_new_session=True,
        )

    def __enter__(self) -> FastAPIServer:
        with open(self.log_file, "wb") as log:
            self.processes = [self._start(port, log) for port in self.ports]
        try:
            for process, port in zip(self.processes, self.ports, strict=True):
                self._wait_ready(process, port, 60.0)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, process: subprocess.Popen, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
                raise FastAPIServerError(f"FastAPI server exited: {' | '.join(tail)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise FastAPIServerError(f"FastAPI server not ready after {timeout:.0f}s")

    def stop(self) -> None:
        for process in self.processes:
            terminate(process, 10)
        self.processes = []

    def __exit__(self, *exc) -> None:
        self.stop()
