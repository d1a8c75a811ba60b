"""Bench fixtures: a tiny run + model repository, and a real Triton serving it."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import build_run_and_repo

from serve.server import TritonServer, free_ports


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, model repository) with tiny_fp32 and tiny_int8."""
    return build_run_and_repo(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def bench_server(tiny, tmp_path_factory):
    http, grpc, metrics = free_ports(3)
    _, repo = tiny
    with TritonServer(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        backend_dir=tmp_path_factory.mktemp("serve") / "backends",
        log_file=tmp_path_factory.mktemp("logs") / "server.log",
        ready_timeout=60,
    ) as s:
        yield s
