"""serve.watchdog on a real tritonserver: a dead stub is reloaded, a retired one is left alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest
import tritonclient.http as httpclient
from serve_helpers import CLASSIFIER

from serve import procs

pytestmark = pytest.mark.slow


@pytest.fixture
def server(fresh_server):  # these tests reload models: not on the shared session server
    return fresh_server


PACKAGES = ("contract", "train", "optimize", "client", "bench", "reliability")


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_instances_retired_by_a_config_change_are_no_crash(server):
    """bench's config search reloads models with fewer instances: their stubs leave."""
    with contextlib.closing(httpclient.InferenceServerClient(server.http_url)) as client:
        config = client.get_model_config(CLASSIFIER)
        for count in (3, 1, 2, 1):
            config["instance_group"][0]["count"] = count
            client.load_model(CLASSIFIER, headers=server.admin_headers, config=json.dumps(config))
            time.sleep(0.5)  # a few watchdog rounds
        stubs = [s for s in procs.stubs(server.process.pid) if s.model == CLASSIFIER]
        assert len(stubs) == 1
        assert server.watchdog.events == []


def test_a_killed_stub_is_reloaded_under_a_marker_named_for_serve(server):
    (stub,) = [s for s in procs.stubs(server.process.pid) if s.model == CLASSIFIER]
    os.kill(stub.pid, signal.SIGKILL)
    assert wait_for(lambda: server.watchdog.events, 10)
    (event,) = server.watchdog.events
    assert event.model == CLASSIFIER and event.error is None
    with contextlib.closing(httpclient.InferenceServerClient(server.http_url)) as client:
        assert client.is_model_ready(CLASSIFIER)
        parameters = client.get_model_config(CLASSIFIER)["parameters"]
    added = set(parameters) - {"intra_op_thread_count"}
    assert len(added) == 1 and next(iter(added)).startswith("serve_")
    assert not [p for p in parameters for package in PACKAGES if package in p]
