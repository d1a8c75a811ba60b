"""Start and stop the FastAPI baseline (bench.fastapi_app) in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from serve.install import with_malloc_env
from serve.procs import terminate


class FastAPIServerError(RuntimeError):
    pass


class FastAPIServer:
    """The baseline in its own process on 127.0.0.1; a context manager that always stops it."""

    def __init__(
        self,
        model: Path,
        port: int,
        threads: int,
        log_file: Path,
        workers: int = 1,
        engine: str = "onnxruntime",
    ):
        self.model, self.port, self.threads, self.log_file = model, port, threads, log_file
        self.workers, self.engine = workers, engine
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FastAPIServer:
        cmd = [
            sys.executable,
            "-m",
            "bench.fastapi_app",
            "--model",
            str(self.model),
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--workers",
            str(self.workers),
            "--engine",
            self.engine,
        ]
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=with_malloc_env(dict(os.environ)),  # as Triton's: a fair baseline
                start_new_session=True,
            )
        try:
            self._wait_ready(60.0)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:]
                raise FastAPIServerError(f"FastAPI server exited: {' | '.join(tail)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise FastAPIServerError(f"FastAPI server not ready after {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        terminate(self.process, 10)
        self.process = None

    def __exit__(self, *exc) -> None:
        self.stop()
