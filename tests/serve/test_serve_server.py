"""serve.server / serve.install without launching Triton: ports, backend dir, env, checks."""

from __future__ import annotations

import os
import socket
import sys
import sysconfig

import pytest
from serve_helpers import ADMIN_KEY, SHM_KEY, write_classifier

from serve.install import MALLOC_ENV, STAMP, ensure_backend_dir, server_env
from serve.server import (
    ADMIN_KEY_ENV,
    DISABLED_HEADER,
    DISABLED_VALUE,
    SHM_KEY_ENV,
    ServerError,
    TritonServer,
    free_port,
    is_loopback,
    list_models,
    port_taken,
)


@pytest.fixture
def listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_helpers(listener):
    assert port_taken("127.0.0.1", listener)
    assert not port_taken("127.0.0.1", free_port())


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_backend_dir_built_once_and_rebuilt_when_stale(tmp_path):
    path = ensure_backend_dir(tmp_path / "backends")
    for rel in ("python/libtriton_python.so", "python/triton_python_backend_utils.py",
                "python/triton_python_backend_stub", "onnxruntime/model.py"):  # fmt: skip
        assert (path / rel).is_file() and not (path / rel).is_symlink(), rel
    assert os.access(path / "python/triton_python_backend_stub", os.X_OK)
    built = (path / STAMP).stat().st_ino
    assert ensure_backend_dir(path) == path and (path / STAMP).stat().st_ino == built
    (path / STAMP).write_text("{}")  # as if a source had changed since
    ensure_backend_dir(path)
    assert (path / STAMP).stat().st_ino != built


def test_server_env_links_our_libpython_and_venv():
    env = server_env({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs[0].endswith("nvidia_pytriton.libs") and os.path.isdir(libs[0])
    assert libs[1] == sysconfig.get_config_var("LIBDIR") and libs[-1] == "/opt/x"
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_server_env_sets_the_allocator_and_keeps_a_users_own_setting():
    env = server_env({"PATH": ""})
    assert all(env[k] == v for k, v in MALLOC_ENV.items())
    assert server_env({"PATH": "", "MALLOC_TRIM_THRESHOLD_": "0"})["MALLOC_TRIM_THRESHOLD_"] == "0"


def test_list_models(tmp_path):
    write_classifier(tmp_path)
    (tmp_path / "not_a_model").mkdir()
    assert list_models(tmp_path) == ["tiny_onnx"]
    (tmp_path / "m_trt").mkdir()
    (tmp_path / "m_trt" / "config.pbtxt").write_text('name: "m_trt"\nplatform: "tensorrt_plan"\n')
    assert list_models(tmp_path) == ["tiny_onnx"]


def _restrictions(cmd: list[str], flag: str) -> dict[str, str]:
    """{api group: header=value} of one restriction flag."""
    return dict(c.split("=", 1)[1].split(":", 1) for c in cmd if c.startswith(f"--{flag}="))


def test_command_binds_host_and_gives_each_api_group_its_key(tmp_path, monkeypatch):
    monkeypatch.delenv(SHM_KEY_ENV, raising=False)
    write_classifier(tmp_path)
    server = TritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3, admin_key=ADMIN_KEY)
    cmd = server.command(tmp_path / "backends")
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                 "--model-control-mode=explicit", "--load-model=tiny_onnx"):  # fmt: skip
        assert flag in cmd
    off = f"{DISABLED_HEADER}={DISABLED_VALUE}"
    groups = {
        "model-repository": f"admin-key={ADMIN_KEY}",
        "shared-memory": off,  # no shared-memory key: off
        "trace,logging": f"admin-key={ADMIN_KEY}",
    }
    for flag in ("http-restricted-api", "grpc-restricted-protocol"):
        assert _restrictions(cmd, flag) == groups
    shm = TritonServer(tmp_path, admin_key=ADMIN_KEY, shm_key=SHM_KEY).command(tmp_path)
    assert _restrictions(shm, "http-restricted-api")["shared-memory"] == f"shm-key={SHM_KEY}"
    open_cmd = TritonServer(tmp_path, restrict_admin=False).command(tmp_path)
    assert not any("restricted" in c for c in open_cmd)


def test_without_an_operator_key_model_control_is_ours_and_the_rest_off(tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    monkeypatch.delenv(SHM_KEY_ENV, raising=False)
    write_classifier(tmp_path)
    server = TritonServer(tmp_path)
    groups = _restrictions(server.command(tmp_path), "http-restricted-api")
    assert groups["model-repository"] == f"admin-key={server.admin_key}"  # the watchdog's
    off = f"{DISABLED_HEADER}={DISABLED_VALUE}"
    assert groups["shared-memory"] == groups["trace,logging"] == off


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["nope"]}, "not in"),
        ({"admin_key": "short"}, "TRITON_ADMIN_KEY must be"),
        ({"shm_key": "has:colon"}, "TRITON_SHM_KEY must be"),
        ({"primary": ["nope"]}, "primary model nope is not among the models to load"),
    ],
)
def test_start_refuses_before_launching(tmp_path, kwargs, message):
    write_classifier(tmp_path)
    with pytest.raises(ServerError, match=message):
        TritonServer(tmp_path, **{"admin_key": ADMIN_KEY, **kwargs}).start()


def test_start_refuses_a_taken_port(tmp_path, listener):
    write_classifier(tmp_path)
    server = TritonServer(tmp_path, http_port=listener, admin_key=ADMIN_KEY)
    with pytest.raises(ServerError, match=f"port {listener} \\(http\\) on 127.0.0.1 is taken"):
        server.start()
    assert server.process is None


def test_start_refuses_missing_repo(tmp_path):
    with pytest.raises(ServerError, match="does not exist"):
        TritonServer(tmp_path / "nope", models=["x"]).start()
