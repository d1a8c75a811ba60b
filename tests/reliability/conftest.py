"""Reliability fixtures: the session's tiny train run, deployed and served on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.deploy import Deployment, prepare, running
from reliability.kinds import Context
from reliability.reference import Reference, probes


@pytest.fixture(scope="session")
def deployment(tiny_run, tmp_path_factory) -> Deployment:
    """tiny_fp32 exported from the run's checkpoint, plus the serve stage's ensemble."""
    return prepare(tmp_path_factory.mktemp("reliability") / "deployment", None, tiny_run)


@pytest.fixture(scope="session")
def reference(deployment) -> Reference:
    return Reference(deployment)


@pytest.fixture(scope="session")
def served(deployment, tmp_path_factory):
    with running(deployment.repo, tmp_path_factory.mktemp("served")) as triton:
        yield triton


@pytest.fixture(scope="session")
def ctx(served, deployment, reference, tmp_path_factory) -> Context:
    context = Context(served, deployment, reference, tmp_path_factory.mktemp("cli"))
    yield context
    context.close()


@pytest.fixture(scope="session")
def checked(deployment, reference):
    return probes(deployment, reference, 4)


@pytest.fixture
def work(tmp_path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def ov_deployment(tiny_run, tmp_path_factory) -> Deployment:
    """The same deployment with its classifier on the openvino backend."""
    dest = tmp_path_factory.mktemp("reliability-openvino") / "deployment"
    return prepare(dest, None, tiny_run, "openvino")
