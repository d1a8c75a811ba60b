"""Where the nvidia-pytriton wheel keeps Triton, and the backend directory we assemble from it.

The wheel ships `tritonserver` plus the Python backend. Triton refuses symlinked backends, so
`.serve/backends/` holds copies: `python/` (the backend library, its utils module and the stub
built for our Python version) and our Python-based backends `onnxruntime/` and `openvino/`,
each its model.py plus a copy of `backend_core.py`, the core both import (the stub puts only
a backend's own folder on `sys.path`). A model whose config says `backend: "onnxruntime"` or
`"openvino"` runs on ours here and on NVIDIA's native C++ backend of that name in NVIDIA's
container, from the same repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from contract.atomic import staged_dir
from serve.errors import ServerError

STATE_DIR = Path(".serve")
BACKEND_DIR = STATE_DIR / "backends"
STAMP = ".stamp.json"
OUR_BACKENDS = Path(__file__).parent / "backends"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def wheel_root() -> Path:
    """`pytriton/tritonserver` of the installed wheel, found without importing pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed in this Python: run `make setup`")
    root = Path(spec.submodule_search_locations[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerError(f"{root}/bin/tritonserver is missing: reinstall nvidia-pytriton")
    return root


def tritonserver_binary() -> Path:
    return wheel_root() / "bin" / "tritonserver"


def _wheel_libs() -> Path:
    # auditwheel puts the shared libraries beside the package: site-packages/nvidia_pytriton.libs
    return wheel_root().parent.parent / "nvidia_pytriton.libs"


def _libpython_dir() -> Path:
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not soname.startswith("libpython") or not (libdir / soname).is_file():
        raise ServerError(
            f"the Python backend stub needs a shared libpython{PYTHON_VERSION}, not found in "
            f"{libdir}: use a Python built with --enable-shared"
        )
    return libdir


# glibc hands an allocation above its mmap threshold (128 KB at first) fresh pages from the
# kernel and trims the heap once 128 KB of its top is free. A stub answering one request at a
# time then page-faults on every request's arrays: a 224 px float image is 602 KB, ~170 faults
# in the preprocess stub, 0.5 ms of a 4.1 ms raw request at c1 here (docs/serve.md). With
# fixed thresholds those buffers stay in the heap and are reused; 32 MB holds a batch of 32
# such images, the most a stub allocates at once. A value the user set stays, and a
# GLIBC_TUNABLES setting of the same tunable overrides these (glibc's rule).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "67108864"}


def with_malloc_env(env: dict[str, str]) -> dict[str, str]:
    return {**MALLOC_ENV, **env}


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python stubs.

    LD_LIBRARY_PATH: the stub links libpython by soname, and without our interpreter's libdir
    it picks the distro's libpython 3.11.x, which then fails on our venv's stdlib. PATH: the
    stub's embedded Python finds its prefix through `python3` on PATH, so our venv goes first
    and the stub sees the venv's numpy<2, onnxruntime and pillow. MALLOC_*: see MALLOC_ENV.
    """
    env = with_malloc_env(dict(os.environ if base is None else base))
    libs = [str(_wheel_libs()), str(_libpython_dir())]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _sources() -> dict[str, Path]:
    """Backend-dir relative path -> the file it is copied from."""
    root = wheel_root()
    stub = root / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the wheel has no Python backend stub for Python {PYTHON_VERSION}")
    python_backend = root / "backends" / "python"
    sources = {
        "python/libtriton_python.so": python_backend / "libtriton_python.so",
        "python/triton_python_backend_utils.py": python_backend / "triton_python_backend_utils.py",
        "python/triton_python_backend_stub": stub,
    }
    shared = sorted(OUR_BACKENDS.glob("*.py"))  # backend_core.py
    for model_py in sorted(OUR_BACKENDS.glob("*/model.py")):
        backend = model_py.parent.name
        sources[f"{backend}/model.py"] = model_py
        sources.update({f"{backend}/{module.name}": module for module in shared})
    return sources


def _fingerprint(sources: dict[str, Path]) -> dict[str, str]:
    # Content hashes: a reinstalled wheel or an edited backend must trigger a rebuild.
    return {rel: hashlib.sha256(src.read_bytes()).hexdigest() for rel, src in sources.items()}


def ensure_backend_dir(path: Path = BACKEND_DIR) -> Path:
    """Return `path` holding current copies of every backend, rebuilding it only if stale."""
    path = Path(path).absolute()
    sources = _sources()
    stamp = _fingerprint(sources)
    try:
        if json.loads((path / STAMP).read_text()) == stamp:
            return path
    except (OSError, ValueError):
        pass
    with staged_dir(path) as tmp:
        for rel, src in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / rel)
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return path
