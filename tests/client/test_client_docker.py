"""Dockerfile.triton and docker/entrypoint.sh, checked without Docker (none here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from serve_helpers import PROJECT_ROOT, SPEC

from optimize.config import RepositoryConfig
from optimize.repository import RepoModel, write_model
from serve.server import DISABLED_HEADER, DISABLED_VALUE, TritonServer

ENTRYPOINT = PROJECT_ROOT / "docker" / "entrypoint.sh"
CFG = RepositoryConfig(max_batch_size=16, preferred_batch_size=[4, 8])


def bash(script: str, **env: str) -> subprocess.CompletedProcess:
    """`script` in bash with the entrypoint's functions defined (sourced, so main does not run)."""
    result = subprocess.run(
        ["bash", "-c", f'source "{ENTRYPOINT}"; {script}'],
        capture_output=True,
        timeout=120,
        env={**os.environ, **env},
    )
    # Decoded by hand: text mode would turn the CR inside DISABLED_HEADER into a line break.
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def lines(text: str) -> list[str]:
    """One argument a line, as the entrypoint's `mapfile` reads them (LF only)."""
    return [line for line in text.split("\n") if line]


@pytest.fixture
def repo(tmp_path) -> Path:
    """The layout optimize writes: an ONNX variant on each CPU engine, the TensorRT model
    without its plan."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"stand-in: only copied, never parsed here")
    root = tmp_path / "models"
    root.mkdir()
    for name, engine in (("tiny_fp32", "onnxruntime"), ("tiny_int8", "openvino")):
        write_model(root, RepoModel(name, onnx, engine=engine), SPEC, CFG)
    write_model(root, RepoModel("tiny_trt", onnx, tensorrt=True), SPEC, CFG)
    return root


def pinned_versions() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (PROJECT_ROOT / "docker" / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )


def test_dockerfile_arg_defaults_equal_versions_env():
    pinned = pinned_versions()
    dockerfile = (PROJECT_ROOT / "Dockerfile.triton").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    assert {k: v for k, v in pinned.items() if k != "CUDA_VERSION"} == args
    assert pinned["TENSORRT_VERSION"].startswith(pinned["TENSORRT_PIP"])


def test_the_gpu_image_pins_the_cpu_paths_preprocessing_libraries_and_tensorrt():
    """One preprocessing: the preprocess model in the GPU image runs the numpy and Pillow the
    CPU path runs, on a Python they support; optimize's TensorRT is the image's."""
    pinned = pinned_versions()
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    cpu = dict(d.split("==") for d in project["dependencies"])
    gpu = dict(d.split("==") for d in project["optional-dependencies"]["gpu"])
    assert (pinned["NUMPY_PIP"], pinned["PILLOW_PIP"]) == (cpu["numpy"], cpu["pillow"])
    assert gpu["tensorrt"] == pinned["TENSORRT_PIP"]
    for package in ("numpy", "pillow"):  # the installed ones are the pinned ones
        needs = SpecifierSet(metadata(package)["Requires-Python"])
        assert Version(pinned["PYTHON_VERSION"]) in needs, f"{package} needs Python {needs}"


def test_entrypoint_is_valid_bash():
    assert os.access(ENTRYPOINT, os.X_OK)
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)


def test_trt_profile_comes_from_the_config_optimize_writes(repo):
    result = bash(f'trt_batch_args "{repo}/tiny_trt/config.pbtxt"')
    assert result.stdout == "1 8 16\n", result.stderr


@pytest.mark.parametrize("shm_key", [None, "test-shm-key-4567"])
def test_server_flags_are_make_serves_minus_the_local_backend(repo, tmp_path, shm_key):
    result = bash(f'server_args "{repo}" test-admin-key-0123 "{shm_key or ""}"')
    assert result.returncode == 0, result.stderr
    ours = lines(result.stdout)
    local = TritonServer(
        repo,
        "0.0.0.0",
        models=["tiny_fp32", "tiny_int8"],
        admin_key="test-admin-key-0123",
        shm_key=shm_key,
    ).command(tmp_path / "backends")[1:]
    # Differences by design: NVIDIA's native backends, and GPU metrics on a GPU host.
    expected = [
        flag
        for flag in local
        if not flag.startswith("--backend-directory=") and flag != "--allow-gpu-metrics=false"
    ]
    assert sorted(ours) == sorted(expected)
    assert result.stderr == ""  # build_plans, not server_args, says why tiny_trt is left out


def test_a_built_plan_is_loaded(repo):
    (repo / "tiny_trt" / "1").mkdir()
    (repo / "tiny_trt" / "1" / "model.plan").write_bytes(b"plan")
    result = bash(f'models_to_load "{repo}"')
    assert result.stdout.split() == ["tiny_fp32", "tiny_int8", "tiny_trt"]


def run_entrypoint(repo: Path, fake_gpu: Path | None = None) -> subprocess.CompletedProcess:
    """The whole entrypoint, tritonserver replaced by echo. `fake_gpu`: a folder with stand-ins
    for nvidia-smi and the tensorrt module, so the entrypoint believes it is on a GPU host."""
    path = [str(Path(sys.executable).parent), os.environ["PATH"]]
    pythonpath = [str(PROJECT_ROOT)]
    if fake_gpu is not None:
        path.insert(0, str(fake_gpu))
        pythonpath.append(str(fake_gpu))
    return subprocess.run(
        [str(ENTRYPOINT), "--log-verbose=1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "MODEL_REPO": str(repo),
            "TRITONSERVER": "echo",
            "TRITON_ADMIN_KEY": "test-admin-key-0123",
            "TRITON_SHM_KEY": "test-shm-key-4567",
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PATH": os.pathsep.join(path),
        },
    )


def test_without_a_gpu_one_line_says_so_and_the_rest_is_served(repo):
    """The cpu overlay of deploy/k8s: same image, no GPU; the start must not fail."""
    result = run_entrypoint(repo)
    assert result.returncode == 0, result.stderr
    flags = result.stdout.split()
    assert [f for f in flags if f.startswith("--load-model=")] == [
        "--load-model=tiny_fp32",
        "--load-model=tiny_int8",
    ]
    assert flags[-1] == "--log-verbose=1"
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "entrypoint: no GPU: TensorRT plan build skipped, not loading tiny_trt "
        "(the CPU variants serve)"
    )
    assert len(lines) == 2 and lines[1].startswith("entrypoint: starting tritonserver with:")
    assert "admin-key=<hidden>" in result.stderr and "test-admin-key-0123" not in result.stderr
    assert "shm-key=<hidden>" in result.stderr and "test-shm-key-4567" not in result.stderr
    assert not (repo / "tiny_trt" / "1" / "model.plan.built-for").exists()


def test_on_a_gpu_host_the_plan_build_is_attempted(repo, tmp_path):
    """With nvidia-smi and tensorrt present the real optimize.tensorrt CLI runs; here it finds
    no CUDA through torch and fails, which leaves tiny_trt out and the rest served."""
    fake = tmp_path / "fake-gpu"
    (fake / "tensorrt").mkdir(parents=True)
    (fake / "tensorrt" / "__init__.py").write_text("__version__ = '10.5.0'\n")
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
    (fake / "nvidia-smi").chmod(0o755)
    result = run_entrypoint(repo, fake)
    assert result.returncode == 0, result.stderr
    assert "building " in result.stderr and "tiny_trt/1/model.plan" in result.stderr
    assert "cannot build a TensorRT plan here: no CUDA device" in result.stderr
    assert "warning: no TensorRT plan for tiny_trt" in result.stderr
    assert "--load-model=tiny_trt" not in result.stdout.split()


@pytest.mark.parametrize("key", ["short", "has:colon-in-it"])
def test_a_malformed_admin_key_stops_the_container(repo, key):
    result = subprocess.run(
        [str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "MODEL_REPO": str(repo),
            "TRITONSERVER": "echo",
            "TRITON_ADMIN_KEY": key,
        },
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "TRITON_ADMIN_KEY must be 8+ characters" in result.stderr


def test_without_keys_the_container_turns_the_admin_apis_off(repo):
    """No stub watchdog in the container: model control is not needed without an operator."""
    result = bash(f'server_args "{repo}" "" ""')
    assert result.returncode == 0, result.stderr
    guards = [f for f in lines(result.stdout) if "restricted" in f]
    assert len(guards) == 6
    assert all(f.endswith(f":{DISABLED_HEADER}={DISABLED_VALUE}") for f in guards)


def test_primary_models_are_the_ensembles_unless_named(model_repo, repo):
    assert bash(f'primary_models "{model_repo}"').stdout.split() == ["tiny"]
    assert bash(f'primary_models "{repo}"').stdout.split() == []  # no ensemble
    named = bash(f'primary_models "{model_repo}"', PRIMARY_MODELS="tiny_onnx, tiny")
    assert named.stdout.split() == ["tiny_onnx", "tiny"]


@pytest.mark.slow
def test_healthcheck_reads_the_primary_models_own_ready_endpoint(server, model_repo):
    """The image's HEALTHCHECK against a real server: the server-level endpoint says ready
    whatever the models do; a primary model that is not ready makes the container unhealthy."""
    env = {"MODEL_REPO": str(model_repo), "HTTP_PORT": str(server.ports["http"])}
    healthy = subprocess.run(
        [str(ENTRYPOINT), "healthcheck"], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )  # fmt: skip
    assert healthy.returncode == 0, healthy.stderr
    missing = subprocess.run(
        [str(ENTRYPOINT), "healthcheck"], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env, "PRIMARY_MODELS": "tiny,tiny_missing"},
    )  # fmt: skip
    assert missing.returncode == 1
    assert (
        missing.stderr.startswith("not ready: ")
        and "/v2/models/tiny_missing/ready" in missing.stderr
    )
