#!/usr/bin/env bash
# Tools for `python -m bench`, kept apart from the project's own packages:
#   .venv/tools/perf_analyzer/bin/perf_analyzer  NVIDIA's load generator (from tritonclient[all]
#       2.49.0's manylinux wheel; the venv keeps its own tritonclient 2.73 for Python)
#   .venv/tools/cuda/                            libcudart.so.12, which perf_analyzer links even
#       on CPU-only hosts (from the nvidia-cuda-runtime-cu12 wheel)
#   .venv/tools/bin/perf_analyzer                a wrapper that sets LD_LIBRARY_PATH
# (FastAPI and uvicorn, for the baseline server, come with requirements.lock.) Idempotent.
# Debian's libb64-0d must be installed (`make setup` does it).
set -euo pipefail

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
TOOLS="$VENV/tools"
TRITONCLIENT_VERSION=2.49.0
CUDART_VERSION=12.9.79
STAMP="$TOOLS/.bench-tools-$TRITONCLIENT_VERSION-$CUDART_VERSION"

[ -x "$PY" ] || { echo "setup-bench: $PY missing: run \`make setup\` first" >&2; exit 1; }
dpkg -s libb64-0d >/dev/null 2>&1 || {
  echo "setup-bench: Debian package libb64-0d missing (perf_analyzer needs it): make setup" >&2
  exit 1
}

quiet_pip() {
  # pip warns once per package about this machine's empty local index dirs; keep errors.
  set -o pipefail
  "$PY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}

if [ ! -f "$STAMP" ]; then
  echo "setup-bench: perf_analyzer from tritonclient[all]==$TRITONCLIENT_VERSION," \
    "libcudart from nvidia-cuda-runtime-cu12==$CUDART_VERSION"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  quiet_pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
    --python-version 3.11 "tritonclient[all]==$TRITONCLIENT_VERSION" -d "$work/wheel"
  "$PY" - "$work/wheel" "$work/pa" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel = next(Path(sys.argv[1]).glob("tritonclient-*.whl"))
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith(".data/data/bin/perf_analyzer"))
    out = Path(sys.argv[2]) / "bin" / "perf_analyzer"
    out.parent.mkdir(parents=True)
    out.write_bytes(z.read(member))
    out.chmod(0o755)
EOF
  quiet_pip install -q --no-deps --target "$work/cuda" "nvidia-cuda-runtime-cu12==$CUDART_VERSION"
  mkdir -p "$TOOLS/bin"
  rm -rf "$TOOLS/perf_analyzer" "$TOOLS/cuda"
  mv "$work/pa" "$TOOLS/perf_analyzer"
  mv "$work/cuda" "$TOOLS/cuda"
  cat >"$TOOLS/bin/perf_analyzer" <<'EOF'
#!/usr/bin/env bash
here=$(cd "$(dirname "$0")/.." && pwd)
export LD_LIBRARY_PATH="$here/cuda/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/perf_analyzer/bin/perf_analyzer" "$@"
EOF
  chmod +x "$TOOLS/bin/perf_analyzer"
  touch "$STAMP"
fi

# The check that matters: the binary starts and finds its libraries.
if ! "$TOOLS/bin/perf_analyzer" --version >/dev/null 2>&1 \
  && ! "$TOOLS/bin/perf_analyzer" --help >/dev/null 2>&1; then
  echo "setup-bench: $TOOLS/bin/perf_analyzer does not start:" >&2
  "$TOOLS/bin/perf_analyzer" --help 2>&1 | head -3 >&2
  exit 1
fi
echo "setup-bench: ready ($TOOLS/bin/perf_analyzer, fastapi, uvicorn)"
