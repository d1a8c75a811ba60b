"""`python -m serve` as an operator runs it: errors, background + stop, foreground + SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from serve_helpers import (
    ADMIN_KEY,
    CLASSIFIER,
    PROJECT_ROOT,
    SPEC,
    local_server,
    write_classifier,
)

from serve.procs import children, stubs
from serve.server import ServerError, free_ports, port_taken


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "serve", *args]


def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_ADMIN_KEY": ADMIN_KEY}
    return subprocess.run(
        serve_cmd(*args), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def port_args(tmp_path) -> tuple[list[str], int]:
    http, grpc, metrics = free_ports(3)
    args = [f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
            f"--log-file={tmp_path / 'server.log'}",
            f"--pid-file={tmp_path / 'server.pid'}"]  # fmt: skip
    return args, http


def ready(http_port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{http_port}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def infer_ok(http_port: int) -> bool:
    with contextlib.closing(httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")) as c:
        x = httpclient.InferInput("input", [1, 1, SPEC.height, SPEC.width], "FP32")
        x.set_data_from_numpy(np.zeros((1, 1, SPEC.height, SPEC.width), np.float32))
        return c.infer(CLASSIFIER, [x]).as_numpy("logits").shape == (1, len(SPEC.labels))


def test_taken_port_is_one_line(tmp_path):
    write_classifier(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        pid_file = tmp_path / "server.pid"
        out = run("--repo", str(tmp_path), f"--http-port={port}", f"--pid-file={pid_file}")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"serve: error: port {port} (http) on 127.0.0.1 is taken: another server is running? "
        "choose another with --http-port"
    ]


def test_missing_repo_is_one_line(tmp_path):
    out = run("--repo", str(tmp_path / "nope"), f"--pid-file={tmp_path / 'server.pid'}")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1
    assert "does not exist" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("onnx", "config_edit", "cause"),
    [
        (False, None, "model.onnx not found"),
        (
            True,
            ("TYPE_FP32 dims: [1", "TYPE_INT32 dims: [1"),
            "'input' is TYPE_INT32 in the config",
        ),
    ],
)
def test_failed_model_load_shows_the_log_tail(
    tmp_path, tiny_onnx, backend_dir, onnx, config_edit, cause
):
    model_dir = write_classifier(tmp_path, tiny_onnx if onnx else None)
    if config_edit:
        config = model_dir / "config.pbtxt"
        config.write_text(config.read_text().replace(*config_edit))
    server = local_server(tmp_path, backend_dir, tmp_path)
    http = server.ports["http"]
    with pytest.raises(ServerError) as e:
        server.start()
    first, *tail = str(e.value).splitlines()
    assert first.startswith("no model loaded (")
    assert any(cause in line for line in tail), tail
    assert not port_taken("127.0.0.1", http)


@pytest.mark.slow
def test_background_then_stop(model_repo, tmp_path):
    args, http = port_args(tmp_path)
    pid_file = tmp_path / "server.pid"
    out = run("--repo", str(model_repo), "--models", CLASSIFIER, *args, "--background")
    try:
        assert out.returncode == 0, out.stderr
        assert f"HTTP     http://127.0.0.1:{http}" in out.stdout
        assert ready(http) and pid_file.is_file()

        again = run("--repo", str(model_repo), *args, "--background")
        assert again.returncode == 1 and "already running" in again.stderr

        # The background server keeps its stub watchdog: a killed stub comes back.
        (triton,) = children(int(pid_file.read_text()))
        os.kill(stubs(triton)[0].pid, signal.SIGKILL)
        said = tmp_path / "server.out"
        assert wait_for(lambda: "reloaded in" in said.read_text(), 20)
        assert infer_ok(http)
        # ... and its supervisor: a dead tritonserver comes back, and says so.
        os.kill(triton, signal.SIGKILL)
        assert wait_for(lambda: "tritonserver is back" in said.read_text(), 30)
        assert f"tritonserver (pid {triton}) died: killed by SIGKILL" in said.read_text()
        assert infer_ok(http)
    finally:
        stop = run("stop", f"--pid-file={pid_file}")
    assert stop.returncode == 0 and "stopped pid" in stop.stdout
    assert not pid_file.exists() and not ready(http)


@pytest.mark.slow
def test_foreground_stops_cleanly_on_sigterm(model_repo, tmp_path):
    args, http = port_args(tmp_path)
    proc = subprocess.Popen(
        serve_cmd("--repo", str(model_repo), "--models", CLASSIFIER, *args),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if "running until Ctrl-C" in line:
                break
        assert ready(http)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not ready(http) and not port_taken("127.0.0.1", http)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_ready_means_the_primary_ensemble_is_ready(model_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    (repo / "tiny" / "config.pbtxt").write_text('name: "tiny" platform: "ensemble" {{')
    args, http = port_args(tmp_path)
    try:  # a server that starts when it should not must not outlive the test either
        out = run("--repo", str(repo), *args, "--background")
        assert out.returncode == 1 and not ready(http)
        assert "serve: error: primary model tiny is unavailable: " in out.stderr

        named = run("--repo", str(repo), *args, "--primary", CLASSIFIER, "--background")
        assert named.returncode == 0, named.stderr
        assert f"primary  {CLASSIFIER}" in named.stdout
        assert "warning: model tiny is unavailable" in named.stdout  # the detached output
        assert infer_ok(http)
    finally:
        run("stop", f"--pid-file={tmp_path / 'server.pid'}")


def consecutive_free_ports(n: int) -> int:
    """A first port with the `n - 1` after it free too (others may take them before us)."""
    for _ in range(50):
        base = free_ports(1)[0]
        if base + n < 65536 and not any(port_taken("127.0.0.1", base + i) for i in range(n)):
            return base
    raise AssertionError(f"no {n} consecutive free ports")


def test_replicas_whose_ports_would_clash_are_one_line(tmp_path):
    write_classifier(tmp_path)
    pid_file = tmp_path / "server.pid"
    try:
        out = run("--repo", str(tmp_path), "--replicas", "2", "--http-port=9000",
                  "--grpc-port=9003", f"--pid-file={pid_file}", "--background")  # fmt: skip
    finally:
        run("stop", f"--pid-file={pid_file}")  # in case it started after all
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1
    assert "would share port 9003" in out.stderr
    zero = run("--repo", str(tmp_path), "--replicas", "0", f"--pid-file={tmp_path / 'p.pid'}")
    assert zero.returncode == 1 and "--replicas must be >= 1, got 0" in zero.stderr


@pytest.mark.slow
def test_two_replicas_in_the_background_then_stop(model_repo, tmp_path):
    base = consecutive_free_ports(6)
    pid_file = tmp_path / "server.pid"
    args = ["--repo", str(model_repo), "--replicas", "2", f"--http-port={base}",
            f"--grpc-port={base + 1}", f"--metrics-port={base + 2}", f"--pid-file={pid_file}",
            f"--log-file={tmp_path / 'server.log'}", "--background"]  # fmt: skip
    out = run(*args)
    try:
        assert out.returncode == 0, out.stderr
        assert f"--url 127.0.0.1:{base},127.0.0.1:{base + 3}" in out.stdout
        assert ready(base) and ready(base + 3) and infer_ok(base) and infer_ok(base + 3)
        serve_pid = int(pid_file.read_text())
        assert len(children(serve_pid)) == 2  # two tritonservers under one serve process
    finally:
        stop = run("stop", f"--pid-file={pid_file}")
    assert stop.returncode == 0 and not ready(base) and not ready(base + 3)
