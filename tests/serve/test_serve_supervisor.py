"""serve.supervisor on a real tritonserver: killed, it comes back; dying again and again, it
is given up on, loudly."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from serve_helpers import local_server

from serve.server import ServerError, TritonServer
from serve.supervisor import RestartPolicy

pytestmark = pytest.mark.slow


def supervised(model_repo, backend_dir, tmp_path, **policy) -> TritonServer:
    restarts = RestartPolicy(backoff=0.1, interval=0.05, **policy)
    return local_server(model_repo, backend_dir, tmp_path, restarts=restarts)


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_killed_tritonserver_comes_back_on_the_same_ports(
    model_repo, backend_dir, tmp_path, capfd
):
    with supervised(model_repo, backend_dir, tmp_path) as server:
        first = server.process.pid
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: any(r.ready_seconds for r in server.supervisor.restarts), 30)
        assert server.process.pid != first
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            assert client.is_model_ready("tiny")  # the same port, the primary ensemble ready
        finally:
            client.close()
        assert (tmp_path / "server.log.1").is_file()  # the dead server's log is kept
    err = capfd.readouterr().err
    assert f"supervisor: tritonserver (pid {first}) died: killed by SIGKILL" in err
    assert "restart 1 of 5 in 0.1s" in err and "tritonserver is back" in err


@pytest.mark.timeout(120)
def test_a_server_that_cannot_come_back_is_given_up_after_its_budget(
    model_repo, backend_dir, tmp_path, capfd
):
    repo = Path(shutil.copytree(model_repo, tmp_path / "repo"))
    server = supervised(repo, backend_dir, tmp_path, max_restarts=2).start()
    try:
        # Its primary ensemble no longer loads (a bad edit meanwhile): every restart fails.
        (repo / "tiny" / "config.pbtxt").write_text('name: "tiny" platform: "ensemble" {{')
        os.kill(server.process.pid, signal.SIGKILL)
        with pytest.raises(ServerError, match="its 2 restarts within 600s are spent: giving up"):
            server.wait()
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "restart 1 of 2 in 0.1s" in err and "restart 2 of 2 in 0.2s" in err  # backoff
    assert err.count("failed: primary model tiny is unavailable") == 2 and "giving up" in err
    assert [r.error is not None for r in server.supervisor.restarts] == [True, True]
