"""serve.replicas: N servers over one repository, each on its own ports with its own supervisor."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from serve_helpers import ADMIN_KEY

from serve.replicas import consecutive_ports, replica_log, start_replicas
from serve.server import ServerError


def test_replicas_count_up_from_the_first_ones_ports():
    assert consecutive_ports(8000, 8001, 8002, 2) == [
        {"http": 8000, "grpc": 8001, "metrics": 8002},
        {"http": 8003, "grpc": 8004, "metrics": 8005},
    ]
    with pytest.raises(ServerError, match="would share port 9003"):
        consecutive_ports(9000, 9003, 9100, 2)  # replica 1's HTTP port is replica 0's gRPC
    with pytest.raises(ServerError, match="above 65535"):
        consecutive_ports(65530, 65531, 65532, 3)


def test_one_server_keeps_its_log_name_and_replicas_number_theirs():
    assert replica_log(Path("s/server.log"), 0, 1) == Path("s/server.log")
    assert replica_log(Path("s/server.log"), 1, 2) == Path("s/server-1.log")


@pytest.mark.slow
def test_each_replica_serves_and_comes_back_on_its_own(model_repo, backend_dir, tmp_path):
    group = start_replicas(
        model_repo, 2, log_dir=tmp_path, admin_key=ADMIN_KEY, backend_dir=backend_dir
    )
    try:
        first, second = group.servers
        assert len(set(group.http_urls)) == 2 and group.http_url == ",".join(group.http_urls)
        assert all(s.model_ready("tiny") for s in group.servers)
        untouched = first.process.pid
        os.kill(second.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not any(r.ready_seconds for r in second.supervisor.restarts):
            assert time.monotonic() < deadline, "replica 1 did not come back"
            time.sleep(0.1)
        assert second.model_ready("tiny") and first.process.pid == untouched
        assert first.supervisor.restarts == []
    finally:
        group.stop()
    assert (tmp_path / "server-1.log.1").is_file()  # the dead replica's own log
