"""Security defaults: loopback bind, locked admin APIs, safe checkpoints, no path escapes,
bounded image decoding, pinned dependencies."""

import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from contract import ImageError, ModelSpec, SpecError, preprocess
from contract.preprocess import MAX_IMAGE_PIXELS
from optimize.config import RepositoryConfig
from optimize.repository import RepoModel, write_model
from reliability.kinds import bomb_png
from serve.cli import _run_parser
from serve.repository import add_preprocess_and_ensemble
from serve.server import (
    ADMIN_KEY_ENV,
    DISABLED_HEADER,
    DISABLED_VALUE,
    GRPC_PREFIX,
    SHM_KEY_ENV,
    TritonServer,
)
from train.checkpoint import CheckpointError, read_checkpoint
from train.config import DataConfig, TrainConfig
from train.data import scan_folder

ROOT = Path(__file__).resolve().parents[2]
SPEC = ModelSpec("tiny", "tinycnn", tuple(f"c{i}" for i in range(4)), 28, 28, "L", (0.5,), (0.5,))
SOURCES = ("contract", "train", "optimize", "serve", "client", "bench", "reliability")


def _other_local_addresses() -> list[str]:
    """127.0.0.2 (loopback, but not the bound address) and this host's outward address."""
    found = ["127.0.0.2"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))  # UDP: no packet is sent, a route is chosen
            found.append(s.getsockname()[0])
        except OSError:
            pass
    return [a for a in found if a != "127.0.0.1" and a != "0.0.0.0"]


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_server_listens_on_127_0_0_1_only(served):
    for port in served.ports.values():
        assert _connects("127.0.0.1", port)
        for address in _other_local_addresses():
            assert not _connects(address, port), f"{address}:{port} answers"


def test_loopback_is_the_default_and_other_hosts_warn(tmp_path):
    assert _run_parser().parse_args([]).host == "127.0.0.1"
    command = " ".join(TritonServer(tmp_path).command(tmp_path))
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in command
    proc = subprocess.run(
        [sys.executable, "-m", "serve", "--host", "0.0.0.0", "--repo", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1 and "warning: binding 0.0.0.0" in proc.stderr


def test_admin_apis_are_restricted_by_default_with_an_unguessable_key(tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    monkeypatch.delenv(SHM_KEY_ENV, raising=False)
    first, second = TritonServer(tmp_path), TritonServer(tmp_path)
    assert first.restrict_admin and len(first.admin_key) >= 24
    assert first.admin_key != second.admin_key
    command = first.command(tmp_path)
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        groups = [c.split("=", 1)[1] for c in command if c.startswith(flag)]
        assert sorted(g.split(":")[0] for g in groups) == [
            "model-repository",
            "shared-memory",
            "trace,logging",
        ]
        # Only model control (the watchdog's) has a key; the others are off.
        assert sum(DISABLED_HEADER in g for g in groups) == 2


def _raw_http(port: int, path: str, header: str) -> bytes:
    """One request as bytes on a socket, whatever a client library would refuse to send."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n".encode()
        )
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


@pytest.mark.slow
def test_an_api_that_is_off_opens_to_no_request(served):
    """Off = guarded by a header name no request can carry, even one written byte by byte."""
    port = served.ports["http"]
    path = "/v2/systemsharedmemory/status"
    assert _raw_http(port, path, "x: y").startswith(b"HTTP/1.1 403")  # the guard is there
    assert not _raw_http(port, path, f"{DISABLED_HEADER}: {DISABLED_VALUE}").startswith(
        b"HTTP/1.1 200"
    )
    client = grpcclient.InferenceServerClient(served.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="Invalid metadata"):
            client.get_system_shared_memory_status(
                headers={f"{GRPC_PREFIX}{DISABLED_HEADER}": DISABLED_VALUE}
            )
    finally:
        client.close()


ADMIN_CALLS_HTTP = {
    "repository index": lambda c, h: c.get_model_repository_index(headers=h),
    "load": lambda c, h: c.load_model("no_such_model", headers=h),
    "unload": lambda c, h: c.unload_model("no_such_model", headers=h),
    "shared memory": lambda c, h: c.register_system_shared_memory("r", "/r", 64, headers=h),
    "trace": lambda c, h: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]},
                                                  headers=h),
    "logging": lambda c, h: c.update_log_settings({"log_verbose_level": 1}, headers=h),
}  # fmt: skip
ADMIN_CALLS_GRPC = {
    "repository index": lambda c, h: c.get_model_repository_index(headers=h),
    "load": lambda c, h: c.load_model("no_such_model", headers=h),
    "shared memory": lambda c, h: c.register_system_shared_memory("r", "/r", 64, headers=h),
}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_admin_apis_refuse_requests_without_the_key(served, protocol):
    module, url, calls = (
        (httpclient, served.http_url, ADMIN_CALLS_HTTP)
        if protocol == "http"
        else (grpcclient, served.grpc_url, ADMIN_CALLS_GRPC)
    )
    header = next(iter(served.admin_headers if protocol == "http" else served.grpc_admin_headers))
    client = module.InferenceServerClient(url)
    try:
        for name, call in calls.items():
            for headers in (None, {header: "wrong-key-123"}):
                with pytest.raises(InferenceServerException, match="restricted") as e:
                    call(client, headers)
                assert "restricted" in e.value.message(), name
        key = served.admin_headers if protocol == "http" else served.grpc_admin_headers
        assert calls["repository index"](client, key) is not None
        assert client.is_model_ready(served.models[0])  # inference needs no key
    finally:
        client.close()


class _Payload:
    """Unpickling this would create `marker`: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        read_checkpoint(path)
    assert not marker.exists()


def test_every_torch_load_in_the_project_uses_weights_only():
    calls = []
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for match in re.finditer(r"torch\.load\(", text):
                end = text.find("\n\n", match.start())
                calls.append((path.name, text[match.start() : end]))
    assert calls, "no torch.load found: the scan is broken"
    for name, call in calls:
        assert "weights_only=True" in call.split(")")[0] + ")", f"{name}: {call[:80]}"


def test_label_folders_only_name_classes(tmp_path):
    """A label comes from one folder name (no '/'), and is only ever written inside files."""
    data = tmp_path / "data"
    odd = ["evil..", "a b", "-rf", "x;rm -rf ~", "ünï"]
    rng = np.random.default_rng(0)
    for label in [*odd, ".hidden"]:
        for i in range(2):
            (data / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                data / label / f"{i}.png"
            )
    scan = scan_folder(DataConfig(root=str(data), val_fraction=0.5), 0)
    assert sorted(scan.classes) == sorted(odd)  # hidden folders are skipped


def test_labels_never_become_paths_in_the_repository(tmp_path):
    labels = ("../../escaped", "/etc/passwd", "..", "a\\b")
    spec = ModelSpec(**{**SPEC.__dict__, "labels": labels}).validate()
    repo = tmp_path / "box" / "repo"
    repo.mkdir(parents=True)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"copied, never parsed here")
    write_model(repo, RepoModel("m_fp32", onnx), spec, RepositoryConfig())
    add_preprocess_and_ensemble(repo, spec, "m_fp32", 8)
    outside = [p for p in (tmp_path / "box").rglob("*") if repo not in p.parents and p != repo]
    assert outside == []
    assert (repo / "m_fp32" / "labels.txt").read_text().splitlines() == list(labels)


def test_run_names_with_paths_are_refused():
    for name in ("../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match="name may hold only"):
            TrainConfig(name=name).validate()


def test_a_spec_name_cannot_leave_the_repository():
    for name in ("../escaped", "a/b", "/abs", ".."):
        with pytest.raises(SpecError):
            ModelSpec(**{**SPEC.__dict__, "name": name}).validate()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, then ours
def test_decoding_is_bounded_by_the_decompression_bomb_limit():
    """Through the server: the chaos kind "decompression bomb"."""
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS <= 50_000_000
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    start = time.monotonic()
    with pytest.raises(ImageError, match="decompression bomb"):
        preprocess(bomb_png(side, side), SPEC)  # just over the limit
    assert time.monotonic() - start < 1.0


def test_dependencies_are_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        d for group in project["optional-dependencies"].values() for d in group
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[\w.+]+", d) for d in specs), specs
    lock = [
        ln.strip()
        for ln in (ROOT / "requirements.lock").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith(("#", "--"))
    ]
    unpinned = [ln for ln in lock if not re.match(r"[A-Za-z0-9_.\-\[\],]+==\S+", ln)]
    assert lock and unpinned == []
