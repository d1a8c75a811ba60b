"""TensorRT engine (`model.plan`) from the tensorrt-target QDQ ONNX, where a GPU exists.

Follows NVIDIA's documented Python build phase (TensorRT 10): Builder -> strongly typed
network (explicit quantization: the Q/DQ nodes alone decide what runs in INT8, no precision
flags) -> OnnxParser -> builder config with one optimization profile -> serialized plan.
Standalone, for a GPU container's entrypoint:

    python -m optimize.tensorrt --onnx model_qdq.onnx --out 1/model.plan --min 1 --opt 8 --max 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract.atomic import atomic_write_bytes

SKIP_HINT = "build on a GPU host: see Dockerfile.triton"


class TensorRTError(RuntimeError):
    """The ONNX graph did not parse or the engine did not build."""


def unavailable() -> str | None:
    """Why no plan can be built here, or None when CUDA and TensorRT are both present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # a slim GPU image may carry tensorrt without torch
        has_cuda = True
    if not has_cuda:
        return "no CUDA device"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    return None


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_mb: int = 1024,
) -> Path:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):  # our models have one input: NCHW, dynamic batch
        tensor = network.get_input(i)
        chw = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (min_batch, *chw), (opt_batch, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path}")
    return atomic_write_bytes(plan_path, bytes(serialized))


def try_build(
    onnx_path: Path,
    plan_path: Path,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_mb: int = 1024,
) -> dict:
    """Build where possible; otherwise print one line and report why. Never raises."""
    reason = unavailable()
    if reason is None:
        try:
            build_plan(onnx_path, plan_path, min_batch, opt_batch, max_batch, workspace_mb)
            print(f"TensorRT: built {plan_path} (batch {min_batch}/{opt_batch}/{max_batch})")
            return {"built": True, "plan": str(plan_path)}
        except Exception as e:  # a failed GPU build must not lose the CPU deployment
            reason = f"build failed: {e}"
    print(f"TensorRT: {reason}, skipped ({SKIP_HINT})")
    return {"built": False, "reason": reason}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m optimize.tensorrt",
        description="Build a TensorRT plan from a QDQ ONNX model (explicit INT8).",
    )
    p.add_argument("--onnx", required=True, type=Path, help="tensorrt-target QDQ ONNX model")
    p.add_argument("--out", required=True, type=Path, help="plan file to write")
    p.add_argument("--min", type=int, default=1, help="smallest batch")
    p.add_argument("--opt", type=int, default=8, help="batch to tune for (preferred batch)")
    p.add_argument("--max", type=int, default=32, help="largest batch (max_batch_size)")
    p.add_argument("--workspace-mb", type=int, default=1024)
    args = p.parse_args(argv)
    if not 1 <= args.min <= args.opt <= args.max:
        print("error: need 1 <= --min <= --opt <= --max", file=sys.stderr)
        return 2
    if not args.onnx.is_file():
        print(f"error: ONNX model not found: {args.onnx}", file=sys.stderr)
        return 2
    reason = unavailable()
    if reason is not None:
        print(f"error: cannot build a TensorRT plan here: {reason}", file=sys.stderr)
        return 1
    try:
        build_plan(args.onnx, args.out, args.min, args.opt, args.max, args.workspace_mb)
    except TensorRTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
