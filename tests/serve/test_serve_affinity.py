"""A warm instance first: on a real tritonserver, requests one at a time run on one instance,
and a burst uses them all (serve.repository.instance_groups + --rate-limit=execution_count)."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import json_format
from serve_helpers import CLASSIFIER

from serve import procs
from serve.repository import instance_groups

pytestmark = pytest.mark.slow


@pytest.fixture
def server(fresh_server):  # these tests reload models: not on the shared session server
    return fresh_server


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of a process: a stub wakes for each
    execution it runs, and barely otherwise."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                total += int(line.split()[1])
    return total


def per_stub_wakeups(server, send) -> list[int]:
    deadline = time.monotonic() + 20  # the replaced config's stub takes a moment to leave
    while len(stubs := [s for s in procs.stubs(server.process.pid) if s.model == CLASSIFIER]) != 2:
        assert time.monotonic() < deadline, stubs
        time.sleep(0.1)
    before = [wakeups(s.pid) for s in stubs]
    send()
    return sorted(wakeups(s.pid) - b for s, b in zip(stubs, before, strict=True))


def test_lone_requests_run_on_one_instance_and_a_burst_on_all(server):
    with contextlib.closing(httpclient.InferenceServerClient(server.http_url)) as client:
        config = client.get_model_config(CLASSIFIER)
        groups = [json_format.MessageToDict(g) for g in instance_groups(2)]
        client.load_model(
            CLASSIFIER,
            headers=server.admin_headers,
            # No batching window: a lone request runs at once.
            config=json.dumps({**config, "instance_group": groups, "dynamic_batching": {}}),
        )
        x = httpclient.InferInput("input", [1, 1, 28, 28], "FP32")
        x.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))

        def one_at_a_time():
            for _ in range(200):
                client.infer(CLASSIFIER, [x])

        other, first = per_stub_wakeups(server, one_at_a_time)
        assert first >= 200 and other < 0.1 * first, (first, other)

    def burst():
        with ThreadPoolExecutor(8) as pool:
            clients = [httpclient.InferenceServerClient(server.http_url) for _ in range(8)]
            list(pool.map(lambda c: [c.infer(CLASSIFIER, [x]) for _ in range(50)], clients))
            for c in clients:
                c.close()

    other, first = per_stub_wakeups(server, burst)
    assert other > 0.2 * first, (first, other)  # the second instance works under load
