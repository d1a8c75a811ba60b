#!/usr/bin/env bash
# Entrypoint of Dockerfile.triton: build each missing TensorRT plan for this GPU, then run
# tritonserver on $MODEL_REPO with the flags `make serve` uses (serve/server.py,
# TritonServer.command), except:
#   - no --backend-directory: NVIDIA's native ONNX Runtime and OpenVINO backends serve the
#     ONNX variants here (`backend: "onnxruntime"` / `"openvino"`, whichever optimize chose);
#     the project's Python stand-ins of those names are only for the CPU wheel server;
#   - addresses 0.0.0.0: Docker forwards published ports to the container's own interface,
#     so the server must listen there; publish with `-p 127.0.0.1:8000:8000` to stay local;
#   - GPU metrics stay on;
#   - no stub watchdog here, so without $TRITON_ADMIN_KEY model control is off, not locked.
# `entrypoint.sh healthcheck` is the image's HEALTHCHECK: ready means every primary model
# ($PRIMARY_MODELS, comma-separated; default every ensemble) answers /v2/models/<name>/ready.
# Extra arguments go to tritonserver.
set -euo pipefail

MODEL_REPO="${MODEL_REPO:-/models}"
HTTP_PORT="${HTTP_PORT:-8000}"
GRPC_PORT="${GRPC_PORT:-8001}"
METRICS_PORT="${METRICS_PORT:-8002}"
BIND_ADDRESS="${BIND_ADDRESS:-0.0.0.0}"
TRITONSERVER="${TRITONSERVER:-/opt/tritonserver/bin/tritonserver}"
# As serve.server: model control (trace and logging ride along) under $TRITON_ADMIN_KEY,
# shared memory under $TRITON_SHM_KEY; an API without its key is off: guarded by a header
# name no request can carry (serve.server.DISABLED_HEADER).
MODEL_CONTROL_APIS="model-repository"
OPERATOR_APIS="trace,logging"
SHM_APIS="shared-memory"
DISABLED_HEADER=$'disabled\rby-serve'

log() { echo "entrypoint: $*" >&2; }

# "<min> <opt> <max>" batch sizes for the TensorRT profile, from a model's config.pbtxt:
# 1, the largest preferred batch size (what optimize tunes for), max_batch_size.
trt_batch_args() {
    local config=$1 max opt=0 size
    max=$(sed -nE 's/^[[:space:]]*max_batch_size:[[:space:]]*([0-9]+).*/\1/p' "$config" | head -n1)
    if [[ -z $max || $max -lt 1 ]]; then
        log "error: $config has no max_batch_size >= 1"
        return 1
    fi
    # Both text forms: protobuf's one line a value, and a hand-written "[4, 8]" list.
    for size in $(sed -nE 's/^[[:space:]]*preferred_batch_size:[[:space:]]*\[?([^]]*)\]?.*/\1/p' \
        "$config" | tr ',' ' '); do
        ((size > opt)) && opt=$size
    done
    ((opt < 1 || opt > max)) && opt=$max
    echo "1 $opt $max"
}

# What a plan is tied to: the GPU model and the TensorRT version that built it.
gpu_fingerprint() {
    local gpu trt
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
    trt=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)
    echo "gpu=${gpu:-unknown} tensorrt=${trt:-unknown}"
}

# Why no plan can be built here; empty when a GPU and TensorRT's Python API are both present.
# Asked here rather than of optimize.tensorrt: the image has TensorRT but no torch for CUDA.
plan_build_blocker() {
    if ! nvidia-smi -L >/dev/null 2>&1; then
        echo "no GPU"
    elif ! python3 -c 'import tensorrt' >/dev/null 2>&1; then
        echo "no TensorRT"
    fi
}

# Build <model>_trt/1/model.plan from model_qdq.onnx where it is missing or was built for
# another GPU or TensorRT. A failed build leaves that model out; the CPU variants still serve.
# Without a GPU (the cpu overlay of deploy/k8s) one line says so and nothing is built.
build_plans() {
    local repo=$1 dir plan stamp want batches min opt max blocker trt=()
    for dir in "$repo"/*_trt; do
        [[ -f $dir/config.pbtxt && -f $dir/model_qdq.onnx ]] && trt+=("$dir")
    done
    ((${#trt[@]})) || return 0
    blocker=$(plan_build_blocker)
    if [[ -n $blocker ]]; then
        log "$blocker: TensorRT plan build skipped, not loading ${trt[*]##*/} (the CPU variants serve)"
        return 0
    fi
    for dir in "${trt[@]}"; do
        plan=$dir/1/model.plan
        stamp=$dir/1/model.plan.built-for
        want=$(gpu_fingerprint)
        if [[ -f $plan && -f $stamp && $(<"$stamp") == "$want" ]]; then
            continue
        fi
        batches=$(trt_batch_args "$dir/config.pbtxt") || continue
        read -r min opt max <<<"$batches"
        log "building $plan ($want, batch $min/$opt/$max); this takes minutes"
        rm -f "$plan" "$stamp"
        mkdir -p "$dir/1"
        if python3 -m optimize.tensorrt --onnx "$dir/model_qdq.onnx" --out "$plan" \
            --min "$min" --opt "$opt" --max "$max"; then
            echo "$want" >"$stamp"
        else
            log "warning: no TensorRT plan for ${dir##*/}; it will not be loaded"
        fi
    done
}

# Every model folder with a config; a TensorRT model only once its plan exists (build_plans
# has said why one is missing).
models_to_load() {
    local repo=$1 dir name
    for dir in "$repo"/*/; do
        dir=${dir%/}
        name=${dir##*/}
        [[ -f $dir/config.pbtxt ]] || continue
        [[ $name == *_trt && ! -f $dir/1/model.plan ]] && continue
        echo "$name"
    done
}

# The key in the variable named $1 (empty if unset), checked.
checked_key() {
    local name=$1
    local key=${!name:-}
    if [[ -n $key && ! $key =~ ^[A-Za-z0-9._~-]{8,}$ ]]; then
        # Triton splits the flag on ',', ':' and '=': other characters would corrupt it.
        log "error: $name must be 8+ characters of A-Z a-z 0-9 . _ ~ -"
        return 1
    fi
    echo "$key"
}

# The flags that guard the APIs $1 with header $2 holding the key $3; no key: off.
restriction() {
    local apis=$1 header=$2 key=$3 group
    group="$apis:$header=$key"
    [[ -n $key ]] || group="$apis:$DISABLED_HEADER=never"
    printf '%s\n' "--http-restricted-api=$group" "--grpc-restricted-protocol=$group"
}

# tritonserver's arguments, one a line: repository $1, admin key $2, shared-memory key $3.
server_args() {
    local repo=$1 key=$2 shm_key=$3 models
    mapfile -t models < <(models_to_load "$repo")
    if ((${#models[@]} == 0)); then
        log "error: no loadable model in $repo"
        return 1
    fi
    printf '%s\n' "--model-repository=$repo" "--model-control-mode=explicit"
    printf -- '--load-model=%s\n' "${models[@]}"
    printf '%s\n' \
        "--disable-auto-complete-config" \
        "--http-address=$BIND_ADDRESS" "--http-port=$HTTP_PORT" \
        "--grpc-address=$BIND_ADDRESS" "--grpc-port=$GRPC_PORT" \
        "--metrics-address=$BIND_ADDRESS" "--metrics-port=$METRICS_PORT" \
        "--exit-timeout-secs=10" \
        "--exit-on-error=false" "--strict-readiness=false" \
        "--rate-limit=execution_count"
    restriction "$MODEL_CONTROL_APIS" admin-key "$key"
    restriction "$SHM_APIS" shm-key "$shm_key"
    restriction "$OPERATOR_APIS" admin-key "$key"
}

# The models an orchestrator waits for, one a line: $PRIMARY_MODELS, else every ensemble.
primary_models() {
    local repo=$1 config
    if [[ -n ${PRIMARY_MODELS:-} ]]; then
        tr ',' '\n' <<<"$PRIMARY_MODELS" | sed '/^[[:space:]]*$/d'
        return
    fi
    for config in "$repo"/*/config.pbtxt; do
        if grep -qE '^[[:space:]]*platform:[[:space:]]*"ensemble"' "$config"; then
            basename "$(dirname "$config")"
        fi
    done
}

# Healthy means every primary model answers its own ready endpoint (the server-level one says
# ready even when a model failed to load). Another model that failed does not make the
# container unhealthy: it shows on its endpoint and in the log while the others serve.
# Without an ensemble, the server's own endpoint. No proxy may stand in between.
healthcheck() {
    local base="http://127.0.0.1:$HTTP_PORT" models urls=() model
    mapfile -t models < <(primary_models "$MODEL_REPO")
    for model in "${models[@]}"; do
        urls+=("$base/v2/models/$model/ready")
    done
    ((${#urls[@]})) || urls=("$base/v2/health/ready")
    python3 -c 'import sys, urllib.request as u
for url in sys.argv[1:]:
    try:
        u.build_opener(u.ProxyHandler({})).open(url, timeout=4)
    except Exception as e:
        sys.exit(f"not ready: {url}: {e}")' "${urls[@]}"
}

main() {
    if [[ ${1:-} == healthcheck ]]; then
        healthcheck
        return
    fi
    local key shm_key lines args shown
    # First: a bad key must not wait for minutes of TensorRT building.
    key=$(checked_key TRITON_ADMIN_KEY)
    shm_key=$(checked_key TRITON_SHM_KEY)
    build_plans "$MODEL_REPO"
    lines=$(server_args "$MODEL_REPO" "$key" "$shm_key")
    mapfile -t args <<<"$lines"
    shown=$(sed -E 's/(admin-key|shm-key)=[^ ]*/\1=<hidden>/g' <<<"${args[*]//$'\r'/\\r}")
    log "starting tritonserver with: $shown"
    exec "$TRITONSERVER" "${args[@]}" "$@"
}

# Sourced (by tests), only the functions are defined.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
